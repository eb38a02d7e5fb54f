import hashlib
from datetime import UTC, datetime, timedelta

from services.auth.domain import (
    AttemptCounter,
    LockoutPolicy,
    SignInCounters,
    SignInPolicies,
    looks_like_token,
    new_token,
    token_hash,
)

POLICY = LockoutPolicy(
    max_failures=3,
    window=timedelta(minutes=15),
    step=timedelta(seconds=60),
    cap=timedelta(seconds=150),
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _count(times: int, now: datetime = T0) -> AttemptCounter:
    counter = AttemptCounter("account:a@b.c", 0, now, None)
    for _ in range(times):
        counter = counter.count_attempt(POLICY, now)
    return counter


def test_attempts_within_the_limit_set_no_lock() -> None:
    counter = _count(3)
    assert counter.failures == 3 and counter.locked_until is None
    assert counter.retry_after(T0) is None


def test_each_attempt_past_the_limit_locks_a_step_longer_up_to_the_cap() -> None:
    assert _count(4).locked_until == T0 + timedelta(seconds=60)
    assert _count(5).locked_until == T0 + timedelta(seconds=120)
    assert _count(9).locked_until == T0 + timedelta(seconds=150)
    assert _count(4).retry_after(T0 + timedelta(seconds=20)) == timedelta(seconds=40)
    assert _count(4).retry_after(T0 + timedelta(seconds=61)) is None


def test_an_expired_window_starts_counting_afresh() -> None:
    later = T0 + timedelta(minutes=16)
    counter = _count(3).count_attempt(POLICY, later)
    assert counter.failures == 1 and counter.window_started_at == later
    assert counter.locked_until is None


def test_tokens_are_256_bit_and_stored_only_as_sha256() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    token = tokens.pop()
    assert looks_like_token(token) and len(token) == 43
    assert token_hash(token) == hashlib.sha256(token.encode()).digest()
    assert token_hash(token) != token_hash(token + "x")
    assert not looks_like_token("short") and not looks_like_token("x" * 42 + "!")



def _counters(account: int, pair: int, address: int) -> SignInCounters:
    return SignInCounters(
        account=_count(account), pair=_count(pair), address=_count(address), now=T0
    )


def test_any_locked_counter_refuses_the_attempt_for_its_longest_wait() -> None:
    assert _counters(0, 0, 0).retry_after() is None
    assert _counters(3, 3, 3).retry_after() is None
    assert _counters(0, 5, 0).retry_after() == timedelta(seconds=120)
    assert _counters(4, 5, 0).retry_after() == timedelta(seconds=120)


def test_an_attempt_counts_against_the_account_the_pair_and_the_address() -> None:
    loose = LockoutPolicy(max_failures=100, window=POLICY.window, step=POLICY.step, cap=POLICY.cap)
    policies = SignInPolicies(account=loose, pair=POLICY, address=loose)
    counted = policies.count_attempt(_counters(3, 3, 3))
    assert [c.failures for c in counted] == [4, 4, 4]
    account, pair, address = counted
    assert pair.locked_until is not None, "the pair's limit is the low one"
    assert account.locked_until is None and address.locked_until is None


def test_an_attempt_given_back_takes_the_lock_it_set_with_it_but_not_an_earlier_one() -> None:
    passed_the_limit = _count(4)
    assert passed_the_limit.given_back(POLICY).locked_until is None
    assert passed_the_limit.given_back(POLICY).failures == 3
    locked_before = _count(5)
    assert locked_before.given_back(POLICY).locked_until == locked_before.locked_until
    assert AttemptCounter("k", 0, T0, None).given_back(POLICY).failures == 0


def test_a_success_gives_back_account_and_address_and_forgets_the_pair() -> None:
    policies = SignInPolicies(account=POLICY, pair=POLICY, address=POLICY)
    counters = SignInCounters(
        account=AttemptCounter("account:x", 1, T0, None),
        pair=AttemptCounter("pair:x", 1, T0, None),
        address=AttemptCounter("address:x", 1, T0, None),
        now=T0,
    )
    given_back, forget = policies.giving_back(counters, success=True)
    assert (sorted(given_back), forget) == (["account:x", "address:x"], "pair:x")
    given_back, forget = policies.giving_back(counters, success=False)
    assert (sorted(given_back), forget) == (["account:x", "address:x", "pair:x"], None)
