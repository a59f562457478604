"""RegisterManagedInstance against guessing: bounded pool, per-source back-off, activation
lock, the same work for unknown ids; and the lock as admins see it (API and CLI)."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hatchway.auth.agentkey import generate_private_key, public_key_b64
from hatchway.auth.tokens import UNMATCHABLE_HASH, verify_secret
from hatchway.errors import InvalidActivation, StoreError, Throttled, ValidationError
from hatchway.server.app import Server, build_server
from hatchway.server.nodes import INVALID_ACTIVATION, NodeService
from hatchway.server.principal import Principal
from hatchway.server.settings import ServerSettings
from hatchway.server.throttle import BackoffPolicy, FailureLimiter
from hatchway.server.verifier import SecretVerifier
from tests.fakes import FakeClock

ADMIN = Principal("AIDA1", "admin", "123456789012", "HWAK1")
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def wrong(i: int = 0) -> str:
    """A well-formed activation code that is not the activation's."""
    return f"WrongCode{i:019d}"


Check = Callable[[str, str], bool]


@pytest.fixture(scope="module")
def public_key() -> str:
    return public_key_b64(generate_private_key())


@dataclass
class Rig:
    server: Server
    nodes: NodeService
    checked: list[str]  # the stored hashes the pool checked codes against, in order
    monotonic: FakeClock
    public_key: str

    async def activation(self) -> tuple[str, str]:
        made = await self.nodes.create_activation(ADMIN, {"RegistrationLimit": 5})
        return made["ActivationId"], made["ActivationCode"]

    async def register(self, activation_id: str, code: str, source: str) -> dict[str, Any]:
        """What the API edge does with a (validated) request from ``source``."""
        body = {"ActivationId": activation_id, "ActivationCode": code, "PublicKey": self.public_key}
        async with self.nodes.attempt(source) as attempt:
            return await self.nodes.register(body, attempt)

    async def described(self, activation_id: str) -> dict[str, Any]:
        listed = await self.nodes.describe_activations(
            {"Filters": [{"FilterKey": "ActivationIds", "FilterValues": [activation_id]}]}
        )
        return dict(listed["ActivationList"][0])


@asynccontextmanager
async def rig(
    tmp_path: Path,
    public_key: str,
    *,
    lock_after: int = 20,
    policy: BackoffPolicy | None = None,
    check: Check | None = None,
    max_waiting: int = 16,
) -> AsyncIterator[Rig]:
    settings = ServerSettings(
        data_dir=tmp_path / "server",
        tls=False,
        port=0,
        activation_lock_after=lock_after,
        throttled_answer_delay=0.0,
    )
    clock = FakeClock()
    server = await build_server(settings, clock=clock)
    checked: list[str] = []

    def counting(code: str, hashed: str) -> bool:
        checked.append(hashed)
        return verify_secret(code, hashed)

    verifier = SecretVerifier(workers=1, max_waiting=max_waiting, check=check or counting)
    monotonic = FakeClock(now=100.0)
    limiter = FailureLimiter(policy or BackoffPolicy(free_failures=1000), clock=monotonic)
    nodes = NodeService(
        server.store,
        settings,
        clock,
        server.control,
        server.sessions,
        verifier=verifier,
        limiter=limiter,
    )
    try:
        yield Rig(server, nodes, checked, monotonic, public_key)
    finally:
        nodes.close()
        await server.close()


def test_an_unknown_id_costs_the_same_scrypt_and_gets_the_same_answer(
    tmp_path: Path, public_key: str
) -> None:
    async def body() -> None:
        async with rig(tmp_path, public_key) as r:
            activation_id, _ = await r.activation()
            stored = await r.server.store.activations.get(activation_id)
            assert stored is not None
            with pytest.raises(InvalidActivation) as unknown:
                await r.register(UNKNOWN_ID, wrong(), "10.0.0.1")
            with pytest.raises(InvalidActivation) as known:
                await r.register(activation_id, wrong(), "10.0.0.1")
            assert unknown.value.message == known.value.message == INVALID_ACTIVATION
            assert r.checked == [UNMATCHABLE_HASH, stored.code_hash]  # one scrypt each
            # ... with the same cost parameters (scheme, n, r, p).
            assert UNMATCHABLE_HASH.split("$")[:4] == stored.code_hash.split("$")[:4]

    asyncio.run(body())


def test_wrong_codes_lock_the_activation_and_then_the_right_code_is_refused_too(
    tmp_path: Path, public_key: str
) -> None:
    async def body() -> None:
        async with rig(tmp_path, public_key, lock_after=3) as r:
            activation_id, code = await r.activation()
            for i in range(3):
                with pytest.raises(InvalidActivation):
                    await r.register(activation_id, wrong(i), f"10.0.0.{i}")
            described = await r.described(activation_id)
            assert described["Locked"] is True and described["FailedAttempts"] == 3
            assert isinstance(described["LockedDate"], float)
            with pytest.raises(InvalidActivation) as refused:
                await r.register(activation_id, code, "10.0.1.1")
            assert refused.value.message == INVALID_ACTIVATION
            assert r.checked[-1] == UNMATCHABLE_HASH  # a locked one is not even checked
            assert await r.server.store.nodes.list() == []
            assert (await r.described(activation_id))["FailedAttempts"] == 4

    asyncio.run(body())


def test_an_unlocked_activation_describes_itself_so(tmp_path: Path, public_key: str) -> None:
    async def body() -> None:
        async with rig(tmp_path, public_key) as r:
            activation_id, code = await r.activation()
            with pytest.raises(InvalidActivation):
                await r.register(activation_id, wrong(), "10.0.0.1")
            assert (await r.register(activation_id, code, "10.0.0.1"))["InstanceId"]
            described = await r.described(activation_id)
            assert described["Locked"] is False and described["FailedAttempts"] == 1
            assert "LockedDate" not in described

    asyncio.run(body())


def test_a_failing_source_must_wait_and_costs_no_scrypt_meanwhile(
    tmp_path: Path, public_key: str
) -> None:
    async def body() -> None:
        policy = BackoffPolicy(free_failures=2, first_delay=5.0)
        async with rig(tmp_path, public_key, policy=policy) as r:
            activation_id, code = await r.activation()
            for _ in range(3):
                with pytest.raises(InvalidActivation):
                    await r.register(activation_id, wrong(), "10.0.0.1")
            checks = len(r.checked)
            with pytest.raises(Throttled):
                await r.register(activation_id, code, "10.0.0.1")  # even the right code
            assert len(r.checked) == checks
            # Another source is not held up ...
            assert (await r.register(activation_id, code, "10.0.0.2"))["InstanceId"]
            # ... and the waiting one may try again once its wait has passed.
            r.monotonic.advance(5.0)
            assert (await r.register(activation_id, code, "10.0.0.1"))["InstanceId"]

    asyncio.run(body())


def test_malformed_requests_count_as_failures_and_a_waiting_source_is_not_read(
    tmp_path: Path, public_key: str
) -> None:
    async def body() -> None:
        policy = BackoffPolicy(free_failures=2, first_delay=5.0)
        async with rig(tmp_path, public_key, policy=policy) as r:
            for _ in range(3):
                with pytest.raises(ValidationError):
                    async with r.nodes.attempt("10.0.0.1"):
                        raise ValidationError("ActivationCode failed to satisfy constraint")
            read = False
            with pytest.raises(Throttled):
                async with r.nodes.attempt("10.0.0.1"):
                    read = True  # the API edge reads and validates the body here
            assert not read and r.checked == []
            async with r.nodes.attempt("10.0.0.2"):  # another source
                read = True
            assert read

    asyncio.run(body())


def test_a_success_resets_the_source(tmp_path: Path, public_key: str) -> None:
    async def body() -> None:
        policy = BackoffPolicy(free_failures=2, first_delay=5.0)
        async with rig(tmp_path, public_key, policy=policy) as r:
            activation_id, code = await r.activation()
            for _ in range(2):
                with pytest.raises(InvalidActivation):
                    await r.register(activation_id, wrong(), "127.0.0.1")
            assert (await r.register(activation_id, code, "127.0.0.1"))["InstanceId"]
            for _ in range(2):  # two free failures again, not a wait
                with pytest.raises(InvalidActivation):
                    await r.register(activation_id, wrong(), "127.0.0.1")
            assert (await r.register(activation_id, code, "127.0.0.1"))["InstanceId"]

    asyncio.run(body())


def test_a_full_pool_answers_throttled(tmp_path: Path, public_key: str) -> None:
    release = threading.Event()
    started = threading.Event()

    def blocked(code: str, hashed: str) -> bool:
        started.set()
        release.wait(10)
        return verify_secret(code, hashed)

    async def body() -> None:
        async with rig(tmp_path, public_key, check=blocked, max_waiting=0) as r:
            activation_id, code = await r.activation()
            first = asyncio.ensure_future(r.register(activation_id, code, "10.0.0.1"))
            assert await asyncio.to_thread(started.wait, 10)
            with pytest.raises(Throttled):
                await r.register(activation_id, code, "10.0.0.2")
            release.set()
            assert (await asyncio.wait_for(first, 10))["InstanceId"]

    try:
        asyncio.run(body())
    finally:
        release.set()


# ---- the whole server: the API edge and the CLI ----------------------------------------------


def test_locked_activation_in_the_api_and_in_activation_list(
    tmp_path: Path, public_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from hatchway.cli import main
    from hatchway.server.app import Running, serve
    from hatchway.transport.apiclient import ApiClient, ApiError

    settings = ServerSettings(
        data_dir=tmp_path / "server", port=0, activation_lock_after=2, throttled_answer_delay=0.0
    )

    def cli(*args: str) -> str:
        main(["--config", str(settings.admin_profile_path), *args])
        return capsys.readouterr().out

    def guess(running: Running, activation_id: str) -> str:
        client = ApiClient(running.endpoint, region="local", credentials=None,
                           ca_file=running.ca_file)  # fmt: skip
        with pytest.raises(ApiError) as refused:
            client.call(
                "RegisterManagedInstance",
                {"ActivationId": activation_id, "ActivationCode": wrong(),
                 "PublicKey": public_key},
            )  # fmt: skip
        return refused.value.code

    async def body() -> None:
        stop = asyncio.Event()
        ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
        server = asyncio.ensure_future(serve(settings, stop, on_ready=ready.set_result))
        try:
            running = await asyncio.wait_for(asyncio.shield(ready), 30)
            assert running.port != 0  # the bound port, from the listening socket
            made = await asyncio.to_thread(cli, "activation", "create", "--output", "json")
            activation_id = json.loads(made)["ActivationId"]
            for _ in range(2):
                code = await asyncio.to_thread(guess, running, activation_id)
                assert code == "InvalidActivation"
            table = await asyncio.to_thread(cli, "activation", "list")
            header, row = table.splitlines()
            assert row.startswith(activation_id)
            # Columns are aligned: each cell starts where its header does.
            assert row[header.index("FAILED") :].split()[0] == "2", table
            assert row[header.index("LOCKED") :].split()[0] == "True", table
            listed = await asyncio.to_thread(cli, "activation", "list", "--output", "json")
            entry = json.loads(listed)["ActivationList"][0]
            assert entry["Locked"] is True and entry["FailedAttempts"] == 2
        finally:
            stop.set()
            await asyncio.wait_for(server, 30)

    try:
        asyncio.run(body())
    finally:
        gc.unfreeze()  # serve() froze this test process's objects


def test_a_failing_database_is_throttling_never_a_500(tmp_path: Path, public_key: str) -> None:
    """Registration under load: a lock or pool wait that timed out is a retryable answer."""

    async def body() -> None:
        async with rig(tmp_path, public_key) as r:
            activation_id, code = await r.activation()
            store = r.server.store.activations

            async def busy(*_: object, **__: object) -> bool:
                raise StoreError("database write failed: OperationalError")

            real, store.register_node = store.register_node, busy  # type: ignore[method-assign]
            with pytest.raises(Throttled) as refused:
                await r.register(activation_id, code, "10.0.0.1")
            assert refused.value.status == 400
            store.register_node = real  # type: ignore[method-assign]
            assert (await r.register(activation_id, code, "10.0.0.1"))["InstanceId"]

    asyncio.run(body())
