"""The official `openai` Python SDK against a running hub (started by python.test.mjs, which
passes RAGSTREAM_BASE and KEY). The hub allows one stream per key, so the 429 is real."""

import os
import unittest

import openai
from openai import OpenAI

BASE = os.environ["RAGSTREAM_BASE"] + "/v1"
KEY = os.environ["KEY"]
QUESTION = "How tall is the Eiffel Tower and who built it?"


def client(**kwargs):
    return OpenAI(base_url=BASE, api_key=kwargs.pop("api_key", KEY), timeout=20, **kwargs)


def extra(model, name):
    return (model.model_extra or {}).get(name)


class ChatCompletions(unittest.TestCase):
    def test_a_stream_reads_sources_text_finish_and_usage(self):
        stream = client().chat.completions.create(
            model="ragstream",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        sources = extra(chunks[0], "sources")
        self.assertTrue(any(s["title"] == "The Eiffel Tower" for s in sources), sources)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertIn("330", text)
        self.assertIn("[1]", text)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        self.assertEqual(finish, ["stop"])
        self.assertEqual(chunks[-1].choices, [])
        self.assertGreater(chunks[-1].usage.completion_tokens, 0)

    def test_b_one_completion_carries_sources(self):
        completion = client().chat.completions.create(
            model="ragstream",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "When did the Golden Gate Bridge open?"},
            ],
            temperature=0.2,
            max_tokens=200,
        )
        self.assertEqual(completion.object, "chat.completion")
        self.assertEqual(completion.choices[0].finish_reason, "stop")
        self.assertIn("1937", completion.choices[0].message.content)
        sources = extra(completion, "sources")
        self.assertTrue(any(s["title"] == "Golden Gate Bridge" for s in sources), sources)
        self.assertGreater(completion.usage.completion_tokens, 0)

    def test_c_a_wrong_key_is_an_authentication_error(self):
        with self.assertRaises(openai.AuthenticationError) as caught:
            client(api_key="not-a-key", max_retries=0).chat.completions.create(
                model="ragstream", messages=[{"role": "user", "content": QUESTION}]
            )
        self.assertEqual(caught.exception.status_code, 401)

    def test_d_an_unknown_model_is_a_bad_request_naming_model(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            client().chat.completions.create(
                model="gpt-unknown", messages=[{"role": "user", "content": QUESTION}]
            )
        self.assertEqual(caught.exception.param, "model")
        self.assertEqual(caught.exception.code, "model_not_found")

    def test_e_an_unsupported_parameter_is_refused_by_name(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            client().chat.completions.create(
                model="ragstream", messages=[{"role": "user", "content": QUESTION}], n=2
            )
        self.assertEqual(caught.exception.param, "n")

    def test_f_a_second_stream_over_the_limit_is_a_rate_limit_error(self):
        held = client().chat.completions.create(
            model="ragstream", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        try:
            next(iter(held))
            with self.assertRaises(openai.RateLimitError) as caught:
                client(max_retries=0).chat.completions.create(
                    model="ragstream", messages=[{"role": "user", "content": QUESTION}]
                )
            self.assertEqual(caught.exception.response.headers.get("retry-after"), "1")
        finally:
            held.close()

    def test_g_models_lists_ragstream(self):
        ids = [m.id for m in client().models.list()]
        self.assertIn("ragstream", ids)


if __name__ == "__main__":
    unittest.main()
