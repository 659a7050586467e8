"""Drives a gateway with the official `openai` Python client, as users will.

Run by tests/clients.rs against a gateway whose network is the test double (it answers
"Hello, world!" in four deltas, job id 0f0f). Exits 0 and prints "ok" when every check
passes; exits 3 when the `openai` package is missing.
"""

import argparse
import sys

try:
    import openai
except ImportError:
    print("the `openai` Python package is missing: pip install openai", file=sys.stderr)
    sys.exit(3)

EXPECTED = "Hello, world!"


def check_completions(client):
    done = client.completions.create(model="smollm2", prompt="Say hi", max_tokens=8, temperature=0)
    assert done.object == "text_completion", done
    assert done.choices[0].text == EXPECTED, done
    assert done.choices[0].finish_reason == "stop", done
    assert done.usage.prompt_tokens == 7 and done.usage.completion_tokens == 4, done
    assert done.to_dict()["olc"]["job_id"] == "0f0f", done

    stream = client.completions.create(model="smollm2", prompt="Say hi", stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == EXPECTED, chunks
    assert chunks[-1].choices[0].finish_reason == "stop", chunks


def check_chat(client):
    messages = [{"role": "user", "content": "Hi!"}]
    done = client.chat.completions.create(model="smollm2:poet", messages=messages)
    assert done.object == "chat.completion", done
    assert done.choices[0].message.role == "assistant", done
    assert done.choices[0].message.content == EXPECTED, done
    assert done.usage.total_tokens == 11, done

    stream = client.chat.completions.create(
        model="smollm2",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant", chunks
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == EXPECTED, chunks
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop", chunks
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 11, chunks


def check_models(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["smollm2", "smollm2:poet", "raw", "strict"], ids


def check_errors(client):
    try:
        client.completions.create(model="no-such-model", prompt="x")
    except openai.NotFoundError as err:
        assert err.status_code == 404, err
        assert err.code == "model_not_found", err.body
    else:
        raise AssertionError("an unknown model did not raise openai.NotFoundError")
    try:
        client.completions.create(model="smollm2", prompt="x", top_p=1.5)
    except openai.BadRequestError as err:
        assert err.param == "top_p", err.body
    else:
        raise AssertionError("top_p=1.5 did not raise openai.BadRequestError")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True, help="the gateway, e.g. http://127.0.0.1:8080/v1")
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key="sk-test", max_retries=0, timeout=30)
    check_models(client)
    check_completions(client)
    check_chat(client)
    check_errors(client)
    print("ok")


if __name__ == "__main__":
    main()
