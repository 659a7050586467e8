//! GGUF model files (llama.cpp's format): reading them safely into a [`super::Checkpoint`].
