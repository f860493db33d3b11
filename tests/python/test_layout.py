"""The ctypes mirrors of the C structs match the headers byte for byte: a C
program compiled against include/ prints sizeof and offsetof of every field
of every mirrored struct, and each must equal what ctypes computed. A field
added to, removed from or moved in a header fails here."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from conftest import ROOT
from mailagent_events import _layout as L
from mailagent_events import _lib


def _members(cls: type, prefix: str = "") -> List[Tuple[str, type]]:
    """(C member designator, ctypes type) of every field, nested ones too."""
    out: List[Tuple[str, type]] = []
    for name, ctype in cls._fields_:  # type: ignore[attr-defined]
        out.append((prefix + name, ctype))
        if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure):
            out.extend(_members(ctype, prefix + name + "."))
    return out


def _python_layout() -> Dict[str, int]:
    got: Dict[str, int] = {}
    for cls, cname in L.C_NAMES.items():
        got[f"sizeof {cname}"] = ctypes.sizeof(cls)
        got[f"alignof {cname}"] = ctypes.alignment(cls)
        for member, _ in _members(cls):
            obj: type = cls
            offset = 0
            for part in member.split("."):
                field = getattr(obj, part)
                offset += field.offset
                size = field.size
                obj = dict(obj._fields_)[part]  # type: ignore[attr-defined]
            got[f"offsetof {cname}.{member}"] = offset
            got[f"sizeof {cname}.{member}"] = size
    return got


def _c_program() -> str:
    lines = [
        "#include <stdalign.h>",
        "#include <stddef.h>",
        "#include <stdio.h>",
        "#include <mailagent/events.h>",
        "int main(void) {",
    ]
    for cls, cname in L.C_NAMES.items():
        lines.append(f'    printf("sizeof {cname} %zu\\n", sizeof({cname}));')
        lines.append(f'    printf("alignof {cname} %zu\\n", (size_t)alignof({cname}));')
        for member, _ in _members(cls):
            lines.append(
                f'    printf("offsetof {cname}.{member} %zu\\n", offsetof({cname}, {member}));'
            )
            lines.append(
                f'    printf("sizeof {cname}.{member} %zu\\n", sizeof((({cname} *)0)->{member}));'
            )
    lines += ["    return 0;", "}"]
    return "\n".join(lines) + "\n"


def test_every_mirrored_struct_matches_the_headers(tmp_path: Path) -> None:
    cc = shutil.which("cc")
    assert cc, "a C compiler (cc) is needed to check the struct layouts"
    src = tmp_path / "layout.c"
    src.write_text(_c_program())
    exe = tmp_path / "layout"
    build = subprocess.run(
        [cc, "-std=c11", "-Wall", "-I", str(ROOT / "include"), str(src), "-o", str(exe)],
        capture_output=True, text=True,
    )
    # A member this package mirrors that the header no longer has fails to compile.
    assert build.returncode == 0, build.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    c_layout = {line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1]) for line in out.splitlines()}
    py_layout = _python_layout()
    assert set(c_layout) == set(py_layout)
    diff = {k: (py_layout[k], c_layout[k]) for k in c_layout if c_layout[k] != py_layout[k]}
    assert not diff, f"ctypes (python, C) differ; update mailagent_events/_layout.py: {diff}"


def test_every_field_of_the_drifting_structs_is_mirrored() -> None:
    """Every member named in mae_publisher_config, mae_publisher_stats and
    mae_db_config is in the mirror: a field added into padding (a bool
    after `connected`) changes no offset and no size."""
    text = (ROOT / "include" / "mailagent" / "publisher.h").read_text()
    text += (ROOT / "include" / "mailagent" / "db.h").read_text()

    for cls, cname in ((L.PublisherConfig, "mae_publisher_config"),
                       (L.PublisherStats, "mae_publisher_stats"), (L.DbConfig, "mae_db_config")):
        body = re.search(r"typedef struct %s \{(.*?)\} %s;" % (cname, cname), text, re.S)
        assert body, cname
        code = re.sub(r"/\*.*?\*/|\[[^]]*\]", "", body.group(1), flags=re.S)
        names = set()
        for decl in code.split(";"):
            decl = decl.strip()
            if not decl:
                continue
            m = re.search(r"\(\s*\*\s*(\w+)\s*\)", decl)  # function pointer
            if m:
                names.add(m.group(1))
                continue
            for part in decl.split(",")[1:] + [decl.split(",")[0]]:
                names.add(re.findall(r"\w+", part)[-1])
        assert names == {n for n, _ in cls._fields_}, cname


def test_a_library_struct_larger_than_the_mirror_is_refused() -> None:
    """The import-time check: a mirror that lacks the config's last field
    is reported, instead of letting the library read past our buffer."""

    class Short(ctypes.Structure):
        _fields_ = L.PublisherConfig._fields_[:-1]

    L.C_NAMES[Short] = "mae_publisher_config"
    try:
        with pytest.raises(ImportError, match="writes past"):
            _lib._check_config_layout(Short, "mae_publisher_config_init")
    finally:
        del L.C_NAMES[Short]
    _lib._check_config_layout(L.PublisherConfig, "mae_publisher_config_init")
