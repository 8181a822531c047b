"""The forge keys of a `[[repos]]` table and `public_url`, as users write them: what each defaults to,
and one line naming the key for what Volt cannot use."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import run_volt

from voltci.config import load_settings
from voltci.errors import BadInput
from voltci.forge import ForgeLink
from voltci.watchlist import read_rules


def rules_of(tmp_path: Path, table: str):
    path = tmp_path / "volt.toml"
    path.write_text("[[repos]]\n" + table)
    return read_rules(path)


def test_a_github_repository_needs_only_its_kind(tmp_path: Path) -> None:
    rule, = rules_of(tmp_path, 'url = "https://github.com/octo/proj.git"\nforge = "github"\npull_requests = true\n'
                               'trusted_authors = ["alice", "bob"]\n')
    assert rule.forge == ForgeLink("github", "https://api.github.com", "octo/proj", "VOLT_FORGE_TOKEN")
    assert rule.pull_requests and rule.trusted_authors == ("alice", "bob")
    assert rule.forge.pull_ref(7) == "refs/pull/7/head"


def test_gitea_and_gitlab_default_to_the_instance_the_url_names(tmp_path: Path) -> None:
    gitea, = rules_of(tmp_path, 'url = "https://codeberg.org/team/app.git"\nforge = "gitea"\n')
    assert (gitea.forge.api, gitea.forge.project) == ("https://codeberg.org", "team/app")
    gitlab, = rules_of(tmp_path, 'url = "https://gitlab.example.org/group/sub/app.git"\nforge = "gitlab"\n'
                                 'forge_project = 42\nforge_token_env = "GITLAB_CI_TOKEN"\n')
    assert gitlab.forge == ForgeLink("gitlab", "https://gitlab.example.org", "42", "GITLAB_CI_TOKEN")
    assert gitlab.forge.pull_ref(3) == "refs/merge-requests/3/head"


def test_a_repository_without_forge_has_no_link(tmp_path: Path) -> None:
    rule, = rules_of(tmp_path, 'url = "/srv/git/app.git"\n')
    assert rule.forge is None and not rule.pull_requests


def test_the_token_is_read_from_the_environment_and_never_kept(monkeypatch) -> None:
    link = ForgeLink("github", "https://api.github.com", "octo/proj", "MY_FORGE_TOKEN")
    monkeypatch.setenv("MY_FORGE_TOKEN", "s3cret")
    assert link.token() == "s3cret" and "s3cret" not in repr(link.to_dict())
    assert ForgeLink.from_dict(link.to_dict()) == link
    monkeypatch.delenv("MY_FORGE_TOKEN")
    assert link.token() is None


GH = 'url = "https://github.com/o/p.git"\n'


@pytest.mark.parametrize("table, message", [
    (GH + 'forge = "bitbucket"\n', "'forge' must be one of github, gitea, gitlab"),
    (GH + 'forge = "github"\nforge_api = "api.github.com"\n', "'forge_api' must be an http(s) URL"),
    (GH + 'forge = "github"\nforge_api = "ftp://x/"\n', "'forge_api' must be an http(s) URL"),
    (GH + 'forge = "github"\nforge_api = 5\n', "'forge_api' must be an http(s) URL"),
    (GH + 'forge_api = "https://x"\n', "'forge_api' needs 'forge'"),
    ('url = "/srv/git/app.git"\nforge = "gitea"\n', "'forge_api' is required"),
    ('url = "/srv/git/app.git"\nforge = "github"\n', "'forge_project' is required"),
    (GH + 'forge = "github"\nforge_project = "p"\n', "'forge_project' must be"),
    ('url = "https://gitlab.com/o/p.git"\nforge = "gitlab"\nforge_project = "o/./p"\n', "'forge_project' must be"),
    (GH + 'forge = "github"\nforge_project = "../../etc"\n', "'forge_project' must be"),
    (GH + 'forge = "github"\nforge_token_env = "A B"\n', "'forge_token_env' must be"),
    (GH + 'pull_requests = "yes"\n', "'pull_requests' must be true or false"),
    (GH + 'trusted_authors = [3]\n', "'trusted_authors' must be a string or a list"),
])
def test_bad_forge_keys_are_one_line_naming_the_key(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(BadInput) as found:
        rules_of(tmp_path, table)
    assert message in str(found.value) and "table 1" in str(found.value) and "\n" not in str(found.value)


def test_public_url_is_where_links_point(tmp_path: Path) -> None:
    settings = load_settings(environ={"VOLT_PUBLIC_URL": "https://ci.example.org/"})
    assert settings.page_root == "https://ci.example.org"
    assert load_settings(environ={"VOLT_WEB_URL": "http://ci.lan:8008"}).page_root == "http://ci.lan:8008"
    with pytest.raises(BadInput, match="VOLT_PUBLIC_URL: setting 'public_url' must be an http"):
        load_settings(environ={"VOLT_PUBLIC_URL": "ci.example.org"})


def test_volt_observe_refuses_an_unknown_forge_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "volt.toml"
    config.write_text('[[repos]]\nurl = "https://github.com/o/p.git"\nforge = "sourcehut"\n')
    result = run_volt("observe", "--once", env={"VOLT_CONFIG": str(config)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "'forge' must be one of" in result.stderr
