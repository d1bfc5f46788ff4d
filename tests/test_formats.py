"""The exporter interface: every registered format implements the ``Format`` protocol with its
signatures, and the CLI, bench and audit take their formats from the registry alone."""

import dataclasses
import inspect

import pytest

from eelbert_export.cli import main
from eelbert_export.exporters.base import FORMATS, Format, FormatOptions, protocol_members
from eelbert_export.reports import audit, bench


@pytest.mark.parametrize("info", FORMATS.values(), ids=lambda info: info.name)
def test_format_module_implements_the_protocol(info):
    module = info.load()
    assert isinstance(module, Format)
    for name in protocol_members():
        declared = getattr(Format, name, None)
        if callable(declared):
            want = list(inspect.signature(declared).parameters)[1:]  # without self
            assert list(inspect.signature(getattr(module, name)).parameters) == want, name
        else:
            compile(getattr(module, name), f"{info.name}.{name}", "exec")  # the memory probe


@pytest.mark.parametrize("info", FORMATS.values(), ids=lambda info: info.name)
def test_cli_bench_and_audit_come_from_the_registry(info, tmp_path):
    command = main.commands[info.name]
    options = {p.name for p in command.params}
    assert {f.name for f in dataclasses.fields(info.options)} <= options
    assert {"quantize", "out_dir", "force"} <= options
    quantize = next(p for p in command.params if p.name == "quantize")
    assert list(quantize.type.choices) == list(info.quantizations)
    assert issubclass(info.options, FormatOptions) and info.suffix in audit.SUFFIXES
    path = tmp_path / f"m{info.suffix}"
    path.mkdir() if info.folder else path.write_bytes(b"")
    assert bench.probe(path) == info.load().MEMORY_PROBE


def test_a_module_missing_a_member_is_refused(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "half_format.py").write_text("def convert(): pass\n")
    info = dataclasses.replace(next(iter(FORMATS.values())), module="half_format")
    with pytest.raises(TypeError, match="lacks MEMORY_PROBE, check"):
        info.load()
