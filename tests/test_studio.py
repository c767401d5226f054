import pytest

from mpl_core.errors import MPLStudioError
from mpl_core.service.studio import Studio


def test_uploads_are_named_by_a_checked_workspace_name(tmp_path):
    studio = Studio(tmp_path / "data")
    with pytest.raises(MPLStudioError, match="workspace name"):
        studio.save_upload("../../escape", b"zip")
    assert not any(tmp_path.rglob("*.zip"))
    assert studio.save_upload("mine", b"zip") == "uploads/mine.zip"
    assert (tmp_path / "data" / "uploads" / "mine.zip").read_bytes() == b"zip"
