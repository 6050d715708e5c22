"""Property test of the prompt loader: whatever rows a JSON Lines file holds (mixed types, nulls, nested messages,
any unicode), loading gives every row as a prompt, or a DataError that names the file and the line at fault."""

import json
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefopt.data import load_prompts
from prefopt.data.encoding import CHAT_ROLES
from prefopt.errors import DataError

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=12))
message = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from([*CHAT_ROLES, "wizard", ""]), scalars), "content": scalars},
    optional={"name": st.text(max_size=4)},
)
prompt_value = st.one_of(
    scalars,
    st.text(min_size=1, max_size=40),  # any unicode, U+2028 and friends included
    st.lists(message, max_size=3),
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=4), scalars, max_size=2),
)
row = st.fixed_dictionaries({"prompt": prompt_value}, optional={"answer": scalars, "prompt ": scalars})
rows = st.lists(row, min_size=1, max_size=6)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows)
def test_any_rows_load_or_fail_naming_the_line(rows, tokenizer):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prompts.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        try:
            examples = load_prompts(str(path), tokenizer, max_prompt_length=64)
        except DataError as err:
            message = str(err)
            assert "\n" not in message and str(path) in message, message
            lines = [int(n) for n in re.findall(r"line (\d+)", message)]
            assert lines and 1 <= lines[0] <= len(rows), message
            return
    assert [e.index for e in examples] == list(range(len(rows)))
    assert all(e.prompt_ids for e in examples)
