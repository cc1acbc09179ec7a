"""ossft: fine-tune OpenAI's gpt-oss models from one YAML recipe."""

__version__ = "0.1.0"
