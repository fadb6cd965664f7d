"""The Nature-DQN Q-network in backend-neutral Keras 3 (TensorFlow or JAX backend)."""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers, ops

from breakout_dqn import contract
from breakout_dqn.errors import ContractError, ModelLoadError, one_line


@keras.saving.register_keras_serializable(package="breakout_dqn")
class ScaleFrames(layers.Layer):
    """uint8 frames -> floats in [0, 1] (float32, or the layer's compute dtype under a mixed policy);
    the scaling lives inside the model (the contract)."""

    def call(self, frames):
        return ops.cast(frames, self.compute_dtype) / 255.0


@keras.saving.register_keras_serializable(package="breakout_dqn")
class DuelingCombine(layers.Layer):
    """Q = V + A - mean(A) (Wang et al. 2016, "Dueling Network Architectures")."""

    def call(self, inputs):
        value, advantages = inputs
        return value + advantages - ops.mean(advantages, axis=1, keepdims=True)


PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


LAYER_NORM_EPSILON = 1e-6  # flax's default, as purejaxql's PQN uses (Keras' own default is 1e-3)


def build_q_network(dueling: bool = False, name: str = "q_network", precision: str = "float32",
                    layer_norm: bool = False) -> keras.Model:
    """Nature CNN (Mnih et al. 2015): uint8 ``frames [N,84,84,4]`` -> float32 ``q_values [N,4]``.

    ``layer_norm`` puts a LayerNorm (over channels, epsilon 1e-6) after each conv and the hidden
    dense layer, before its ReLU, with He-normal kernels: PQN's network (Gallici et al. 2024, as
    purejaxql builds it). ``precision="bfloat16"`` computes the hidden layers under Keras'
    ``mixed_bfloat16`` policy (float32 weights, bfloat16 arithmetic); the output layers stay
    float32, and the weights are the same list as the float32 network's, so ``float32_copy`` makes
    the exported artifact.
    """
    policy = PRECISIONS[precision]

    def block(layer: layers.Layer, inputs, label: str):
        if not layer_norm:
            return layer(inputs)
        x = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=f"{label}_norm", dtype=policy)(layer(inputs))
        return layers.ReLU(name=f"{label}_relu", dtype=policy)(x)

    activation = None if layer_norm else "relu"
    kernels = "he_normal" if layer_norm else "glorot_uniform"
    conv = dict(activation=activation, kernel_initializer=kernels, dtype=policy)
    frames = keras.Input(shape=contract.STACK_SHAPE, dtype="uint8", name=contract.INPUT_NAME)
    x = ScaleFrames(name="scale", dtype=policy)(frames)
    x = block(layers.Conv2D(32, 8, strides=4, name="conv1", **conv), x, "conv1")
    x = block(layers.Conv2D(64, 4, strides=2, name="conv2", **conv), x, "conv2")
    x = block(layers.Conv2D(64, 3, strides=1, name="conv3", **conv), x, "conv3")
    x = layers.Flatten(name="flatten", dtype=policy)(x)
    if dueling:
        value = block(layers.Dense(512, name="value_hidden", **conv), x, "value_hidden")
        value = layers.Dense(1, name="value", dtype="float32")(value)
        advantages = block(layers.Dense(512, name="advantage_hidden", **conv), x, "advantage_hidden")
        advantages = layers.Dense(contract.NUM_ACTIONS, name="advantages", dtype="float32")(advantages)
        q_values = DuelingCombine(name=contract.OUTPUT_NAME, dtype="float32")([value, advantages])
    else:
        x = block(layers.Dense(512, name="hidden", **conv), x, "hidden")
        q_values = layers.Dense(contract.NUM_ACTIONS, name=contract.OUTPUT_NAME, dtype="float32")(x)
    return keras.Model(inputs=frames, outputs=q_values, name=name)


def float32_copy(model: keras.Model, dueling: bool, layer_norm: bool = False) -> keras.Model:
    """``model`` itself if it computes in float32, else a float32 network with its weights."""
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    copy = build_q_network(dueling=dueling, name=model.name, layer_norm=layer_norm)
    copy.set_weights(model.get_weights())
    return copy


def load_q_network(path: str | Path) -> keras.Model:
    """Load a ``.keras`` Q-network (safe mode) and check its contract: the one Keras loader of every stage.

    ModelLoadError (exit 2) for a file that is missing or not a Keras model; ContractError (exit 3) for
    a model that does not map uint8 ``[N,84,84,4]`` to ``[N,4]``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # zip, h5 and deserialization errors all mean "not a model"
        raise ModelLoadError(f"cannot load Keras model {path}: {one_line(error)}") from None
    try:
        check_model_contract(model)
    except (ContractError, AttributeError, IndexError) as error:
        raise ContractError(f"{path} breaks the model contract: {' '.join(str(error).split())}") from None
    return model


def check_model_contract(model: keras.Model) -> None:
    """Raise ContractError unless the model maps uint8 [N,84,84,4] to [N,4]."""
    inputs = model.inputs
    if len(inputs) != 1:
        raise ContractError(f"model must have one input, got {len(inputs)}")
    shape = tuple(inputs[0].shape[1:])
    if shape != contract.STACK_SHAPE:
        raise ContractError(f"model input must be [N,84,84,4] (channels last), got {list(inputs[0].shape)}")
    if str(inputs[0].dtype) != "uint8":
        raise ContractError(f"model input must be uint8 (scaling happens inside), got {inputs[0].dtype}")
    out_shape = tuple(model.outputs[0].shape[1:])
    if out_shape != (contract.NUM_ACTIONS,):
        raise ContractError(f"model output must be [N,{contract.NUM_ACTIONS}], got {list(model.outputs[0].shape)}")
