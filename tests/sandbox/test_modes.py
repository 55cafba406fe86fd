"""Who may run user code in each mode (pure logic, plus the real probe on this host)."""

from __future__ import annotations

from pathlib import Path

import pytest

from submitter import sandbox
from submitter.config import load_settings
from submitter.roles import Role
from submitter.sandbox import bwrap


@pytest.fixture
def no_bubblewrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This host as one without bubblewrap: no `bwrap` on PATH, nothing remembered."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(bwrap, "_STARTS", False)


def test_with_a_sandbox_here_everyone_the_kind_admits_may(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    assert sandbox.host_mode(settings).sandboxed
    for role in (Role.user, Role.admin, None):
        assert sandbox.refusal(settings, role, on_worker=True) is None


def test_none_lets_admins_only(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, sandbox="none")
    assert sandbox.refusal(settings, Role.admin, on_worker=True) is None
    for role in (Role.user, Role.viewer, None):  # None: a revoked or unknown owner
        said = sandbox.refusal(settings, role, on_worker=True)
        assert said is not None and "only admin keys" in said
        assert "apt-get install bubblewrap" in said and "SUBMITTER_SANDBOX" in said


@pytest.mark.usefixtures("no_bubblewrap")
def test_auto_without_bubblewrap_says_what_to_install(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    assert bwrap.probe() is not None and "not installed" in str(bwrap.probe())
    assert not sandbox.host_mode(settings).sandboxed
    said = sandbox.refusal(settings, Role.user, on_worker=False)
    assert said is not None and "bubblewrap is not installed" in said
    assert sandbox.refusal(settings, Role.admin, on_worker=True) is None


@pytest.mark.usefixtures("no_bubblewrap")
def test_bwrap_required_refuses_even_admins_on_a_worker_without_it(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, sandbox="bwrap")
    # The API takes the operator at their word (it runs no user code) ...
    assert sandbox.refusal(settings, Role.user, on_worker=False) is None
    # ... a worker that cannot start a sandbox runs nothing, an admin's job included.
    said = sandbox.refusal(settings, Role.admin, on_worker=True)
    assert said is not None and said.startswith("SUBMITTER_SANDBOX is bwrap, but")
