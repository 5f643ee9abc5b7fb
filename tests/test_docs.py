from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_docs_build_without_warnings(tmp_path):
    sphinx = pytest.importorskip("sphinx.cmd.build")
    status = sphinx.build_main(["-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path / "html")])
    assert status == 0, "sphinx-build -W reported warnings or errors (run it by hand to see them)"
    assert (tmp_path / "html" / "api.html").read_text().count("global_structured") > 0
