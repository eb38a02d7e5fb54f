"""The gateway's token cache: what bounds the staleness of a remembered answer."""

import uuid
from datetime import UTC, datetime

from gateway.tokens import TokenCache, Validated
from shopkit.identity import Role

NOW = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def validated(user_id: uuid.UUID | None = None, session_left: float = 3600) -> Validated:
    return Validated(
        role=Role.USER,
        user_id=user_id or uuid.uuid4(),
        session_id=uuid.uuid4(),
        expires_at=datetime.fromtimestamp(NOW + session_left, UTC),
    )


def cache(ttl: float = 5, size: int = 100) -> tuple[TokenCache, Clock]:
    clock = Clock()
    tokens = TokenCache(ttl, size, clock=clock, wall_clock=clock)
    tokens.listening = True
    return tokens, clock


def test_an_answer_is_remembered_for_the_ttl_and_no_longer() -> None:
    tokens, clock = cache(ttl=5)
    answer = validated()
    tokens.put("t", answer, tokens.evictions)
    clock.now += 4.9
    assert tokens.get("t") == answer
    clock.now += 0.2
    assert tokens.get("t") is None
    assert len(tokens) == 0


def test_an_answer_never_outlives_its_session() -> None:
    tokens, clock = cache(ttl=60)
    tokens.put("t", validated(session_left=2), tokens.evictions)
    clock.now += 2.1
    assert tokens.get("t") is None
    tokens.put("expired", validated(session_left=-1), tokens.evictions)
    assert len(tokens) == 0


def test_evicting_a_user_forgets_every_token_of_theirs_only() -> None:
    tokens, _ = cache()
    ann, bob = uuid.uuid4(), uuid.uuid4()
    for token, user in (("a1", ann), ("a2", ann), ("b1", bob)):
        tokens.put(token, validated(user), tokens.evictions)
    tokens.evict_users([ann])
    assert tokens.get("a1") is None and tokens.get("a2") is None
    assert tokens.get("b1") is not None


def test_an_answer_asked_for_before_an_eviction_is_not_remembered() -> None:
    """A validation in flight while a logout is processed must not re-admit the token."""
    tokens, _ = cache()
    before = tokens.evictions
    tokens.evict_users([uuid.uuid4()])
    tokens.put("t", validated(), before)
    assert tokens.get("t") is None


def test_nothing_is_used_while_revocations_cannot_be_heard() -> None:
    tokens, _ = cache()
    tokens.put("t", validated(), tokens.evictions)
    tokens.listening = False
    assert tokens.get("t") is None
    tokens.put("u", validated(), tokens.evictions)
    tokens.listening = True
    assert tokens.get("u") is None


def test_a_ttl_of_zero_turns_the_cache_off() -> None:
    tokens, _ = cache(ttl=0)
    tokens.put("t", validated(), tokens.evictions)
    assert tokens.get("t") is None


def test_the_least_recently_used_token_goes_first_past_the_size() -> None:
    tokens, _ = cache(size=2)
    for token in ("a", "b"):
        tokens.put(token, validated(), tokens.evictions)
    assert tokens.get("a") is not None  # a is now the most recent
    tokens.put("c", validated(), tokens.evictions)
    assert len(tokens) == 2
    assert tokens.get("b") is None
    assert tokens.get("a") is not None and tokens.get("c") is not None
