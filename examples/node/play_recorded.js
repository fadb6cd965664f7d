// Plays recorded Breakout screens through breakout.v1.AgentService/PlayGame and prints the actions.
//
//   npm ci                                                   # once: @grpc/grpc-js, @grpc/proto-loader
//   python ../record_screens.py --out recording.json         # or any game's own screens
//   node play_recorded.js recording.json 127.0.0.1:50051
//
// The client does no preprocessing and no FIRE logic: it sends, per agent step, the screens its game
// rendered (here: read back from the recording) and the lives, one GameFrame at a time, and reads
// the GameAction to press for the next 4 frames. The server builds the model's frame stacks and
// presses FIRE at a new game and after a lost life. Prints one JSON line:
// {"model_version": ..., "actions": [...], "serve_policy": [...]}.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTOS = path.join(__dirname, '..', '..', 'protos');
const MAX_MESSAGE_BYTES = 4 * 210 * 160 * 3 + 1024; // a frame of 4 RGB screens

function loadService() {
  const definition = protoLoader.loadSync('breakout/v1/agent.proto', {
    includeDirs: [PROTOS],
    keepCase: true, // field names as in the .proto: new_game, model_version
    enums: String,
    defaults: true,
  });
  return grpc.loadPackageDefinition(definition).breakout.v1.AgentService;
}

function main() {
  const [recordingPath, target = '127.0.0.1:50051'] = process.argv.slice(2);
  if (!recordingPath) {
    console.error('usage: node play_recorded.js RECORDING.json [HOST:PORT]');
    process.exit(2);
  }
  const recording = JSON.parse(fs.readFileSync(recordingPath, 'utf8'));
  const screens = fs.readFileSync(path.join(path.dirname(recordingPath), recording.screens_file));
  const AgentService = loadService();
  const client = new AgentService(target, grpc.credentials.createInsecure(), {
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  });
  const call = client.PlayGame();
  const result = { model_version: '', actions: [], serve_policy: [] };
  let index = 0;
  let offset = 0;

  // Lockstep, like a game loop: the next frame goes out once the last one's action is back.
  function sendNext() {
    if (index === recording.frames.length) {
      call.end();
      return;
    }
    const frame = recording.frames[index];
    const size = frame.screens * recording.screen_bytes;
    call.write({
      screens: screens.subarray(offset, offset + size),
      format: recording.format,
      lives: frame.lives,
      new_game: frame.new_game,
    });
    offset += size;
  }

  call.on('data', (action) => {
    result.model_version = action.model_version;
    result.actions.push(action.action);
    result.serve_policy.push(action.serve_policy);
    index += 1;
    sendNext();
  });
  call.on('error', (error) => {
    console.error(`PlayGame failed: ${grpc.status[error.code]}: ${error.details}`);
    process.exitCode = 1;
    client.close();
  });
  call.on('end', () => {
    console.log(JSON.stringify(result));
    client.close();
  });
  sendNext();
}

main();
