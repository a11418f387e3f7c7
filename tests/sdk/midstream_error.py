"""A stream that fails after its first chunks: the official Python SDK raises `APIError` with
the hub's message instead of ending quietly (run by midstream.test.mjs)."""

import os
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["RAGSTREAM_BASE"] + "/v1", api_key=os.environ["KEY"], timeout=20)
stream = client.chat.completions.create(
    model="ragstream", messages=[{"role": "user", "content": "What is RAG?"}], stream=True
)
text = ""
try:
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
except openai.APIError as e:
    print(f"raised {type(e).__name__} after {text!r}: {e.message}")
    sys.exit(0)
print(f"no error raised; text {text!r}")
sys.exit(1)
