"""Record raw Breakout screens for a PlayGame client in any language (``examples/node/play_recorded.js``).

    python examples/record_screens.py --out recording.json --steps 200 [--rgb] [--seed 0]

Plays one game in ale-py's bare emulator (random actions, FIRE after each lost life, 4 frames per
action) and writes, per agent step, what a game client would send: the last two screens the step
rendered, as ALE grayscale (33,600 bytes each, [210,160]) or RGB (100,800 bytes, [210,160,3]), and
the lives. ``recording.json`` lists the frames; the screens, concatenated in order, go to
``recording.bin`` beside it. The first frame opens the game (one screen, ``new_game``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from breakout_dqn import contract
from breakout_dqn.serving.play_raw import SCREENS_SENT, bare_breakout


def record(out: Path, steps: int, rgb: bool, seed: int) -> dict:
    ale, rng = bare_breakout(), np.random.default_rng(seed)
    actions = ale.getMinimalActionSet()

    def screen() -> np.ndarray:
        return ale.getScreenRGB() if rgb else ale.getScreenGrayscale()

    chunks, frames = [screen()[None]], [{"screens": 1, "lives": int(ale.lives()), "new_game": True}]
    lives = int(ale.lives())
    for _ in range(steps - 1):
        action = contract.FIRE_ACTION if int(ale.lives()) < lives else int(rng.integers(len(actions)))
        lives = int(ale.lives())
        rendered = []
        for _ in range(contract.FRAME_SKIP):
            ale.act(actions[action])
            rendered.append(screen())
        if ale.game_over():
            break
        chunks.append(np.stack(rendered[-SCREENS_SENT:]))
        frames.append({"screens": SCREENS_SENT, "lives": int(ale.lives()), "new_game": False})
    binary = out.with_suffix(".bin")
    binary.write_bytes(b"".join(chunk.tobytes() for chunk in chunks))
    recording = {
        "format": "SCREEN_FORMAT_RGB" if rgb else "SCREEN_FORMAT_GRAYSCALE",
        "screen_bytes": contract.SCREEN_RGB_BYTES if rgb else contract.SCREEN_GRAYSCALE_BYTES,
        "screens_file": binary.name,
        "frames": frames,
    }
    out.write_text(json.dumps(recording, indent=1))
    return recording


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the recording's JSON file (screens go to .bin)")
    parser.add_argument("--steps", type=int, default=200, help="agent steps to record (fewer if the game ends)")
    parser.add_argument("--rgb", action="store_true", help="record RGB screens instead of ALE grayscale")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random actions")
    args = parser.parse_args()
    recording = record(args.out, args.steps, args.rgb, args.seed)
    print(f"{len(recording['frames'])} frames -> {args.out} + {recording['screens_file']}")


if __name__ == "__main__":
    main()
