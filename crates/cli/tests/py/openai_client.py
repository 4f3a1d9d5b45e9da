"""The `openai` Python package against `mismatch serve` (run by serve_cli.rs when the package is
installed): model list, chat with log-probs, a stream, echo scoring, and an error it raises.

    python openai_client.py BASE_URL
"""
import sys

from openai import NotFoundError, OpenAI

c = OpenAI(base_url=sys.argv[1], api_key="unused")
assert [m.id for m in c.models.list().data] == ["smollm2-135m"]
q = [{"role": "user", "content": "What is the capital of France?"}]
r = c.chat.completions.create(model="smollm2-135m", messages=q, temperature=0, max_tokens=20, logprobs=True, top_logprobs=2)
text = r.choices[0].message.content
assert "Paris" in text, text
assert len(r.choices[0].logprobs.content[0].top_logprobs) == 2
s = c.chat.completions.create(model="smollm2-135m", messages=q, temperature=0, max_tokens=20, stream=True)
assert "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices) == text
e = c.completions.create(model="smollm2-135m", prompt="The cat sat", max_tokens=0, echo=True, logprobs=1)
lp = e.choices[0].logprobs.token_logprobs
assert lp[0] is None and all(x < 0 for x in lp[1:]), lp
try:
    c.chat.completions.create(model="nope", messages=q)
    raise SystemExit("an unknown model must raise")
except NotFoundError as err:
    assert "does not exist" in str(err)
print("ok")
