"""Credentials never leave the process: not into the recipe copy, the model card, the summary or the
launch command ossft prints.

Three nets, because each one alone misses something: fields whose name says credential
(`train.hub_token`), values shaped like a known token (Hugging Face `hf_...`, OpenAI `sk-...`,
GitHub `ghp_...`), and the exact values of environment variables whose name says credential
(`HF_TOKEN`, `WANDB_API_KEY`, `AWS_SECRET_ACCESS_KEY`, ...), which have no recognisable shape.
"""

from __future__ import annotations

import os
import re

REDACTED = "<redacted>"
# Field names that hold a credential. Not a bare "token": eos_token and pad_token are tokenizer words.
SECRET_FIELD = re.compile(
    r"^(hub_token|.*(secret|password|passwd|api_key|apikey|access_key|credential|auth_token).*)$", re.IGNORECASE
)
SECRET_ENV = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|APIKEY|ACCESS_KEY|CREDENTIAL)", re.IGNORECASE)
TOKEN_SHAPES = re.compile(r"(hf_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9_\-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{30,})")
MIN_SECRET_LENGTH = 8  # shorter values ("1", "true") are settings, and would redact half the text


def secret_values(env: dict[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    values = {v for k, v in env.items() if SECRET_ENV.search(k) and len(v) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)  # longest first: one secret may contain another


def redact(text: str, env: dict[str, str] | None = None) -> str:
    for value in secret_values(env):
        text = text.replace(value, REDACTED)
    return TOKEN_SHAPES.sub(REDACTED, text)


def without_secrets(data, env: dict[str, str] | None = None):
    """A copy of nested dicts / lists with credential fields and credential-looking values redacted."""
    if isinstance(data, dict):
        return {
            key: REDACTED if SECRET_FIELD.match(str(key)) and value not in (None, "") else without_secrets(value, env)
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [without_secrets(item, env) for item in data]
    if isinstance(data, str):
        return redact(data, env)
    return data
