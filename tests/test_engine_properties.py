"""Property-based tests of the pure engine: random configurations, random firing orders.

No manager, no threads: a tiny driver applies inputs with ``step`` and plays the task
runner itself, answering each ``RunInstance`` with a ``finished`` report and firing
each ``Cascade``.  Every transition is checked against the invariants below.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_triggers.engine import (
    EMPTY,
    Cascade,
    ConfigurationUpdated,
    Effect,
    Fired,
    Ignored,
    Input,
    InstanceChanged,
    RunInstance,
    SessionState,
    StatusReported,
    TriggerFired,
    step,
)
from stream_triggers.engine.state import CHUNK, Names
from stream_triggers.events.state_format import decode_state, encode_state
from stream_triggers.types import Status, TaskInstance

TRIGGERS = ("a", "b", "c", "d")
START = datetime(2024, 1, 1)

# Each test stays well under ten seconds.
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)


# -- strategies ------------------------------------------------------------------------


@st.composite
def configurations(draw: st.DrawFn, *, with_unless: bool = True) -> dict[str, dict[str, Any]]:
    """1-5 tasks, each after 1-3 triggers (alphabet or earlier tasks: acyclic)."""
    config: dict[str, dict[str, Any]] = {}
    for i in range(draw(st.integers(1, 5))):
        pool = [*TRIGGERS, *config]
        directives: dict[str, Any] = {
            "after": draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True)),
            "run": "tests.noop",
        }
        if draw(st.integers(0, 2)) == 0:
            directives["andEvery"] = draw(st.sampled_from(TRIGGERS))
        if with_unless and draw(st.integers(0, 2)) == 0:
            directives["unless"] = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2, unique=True))
        config[f"t{i}"] = directives
    return config


firings = st.lists(st.sampled_from(TRIGGERS), min_size=2, max_size=16)

# ("fire", trigger) or ("finish", k): report the k-th (mod count) pending run finished.
_fire = st.tuples(st.just("fire"), st.sampled_from(TRIGGERS))
actions = st.lists(
    st.one_of(_fire, _fire, st.tuples(st.just("finish"), st.integers(0, 7))),
    min_size=4,
    max_size=30,
)


# -- the driver ------------------------------------------------------------------------


class Session:
    """One session driven through ``step`` only, checking invariants at every transition."""

    def __init__(self, configuration: dict[str, dict[str, Any]]) -> None:
        self.clock = START
        self.state = EMPTY
        self.runs: list[TaskInstance] = []
        self.pending: list[str] = []  # scheduled instances whose runner has not reported yet
        self.abandoned: set[str] = set()
        self.apply(ConfigurationUpdated(configuration, self._now()))

    def _now(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    @property
    def tasks_run(self) -> set[str]:
        return {instance.config.name for instance in self.runs}

    # -- inputs ------------------------------------------------------------------------

    def fire(self, trigger: str, kwargs: dict[str, Any] | None = None) -> None:
        self._process(TriggerFired(trigger, kwargs if kwargs is not None else {"n": len(self.runs)}, self._now()))

    def finish(self, name: str) -> None:
        self.pending.remove(name)
        self._process(StatusReported(name, Status.FINISHED, {}, self._now(), result={}))

    def finish_all(self) -> None:
        while self.pending:
            self.finish(self.pending[0])

    def _process(self, first: Input) -> None:
        """Apply ``first`` and every cascade it sets off (runs stay pending)."""
        queue: deque[Input] = deque([first])
        while queue:
            event = queue.popleft()
            for effect in self.apply(event):
                if isinstance(effect, Cascade):
                    queue.append(TriggerFired(effect.trigger, effect.kwargs, self._now()))
            if isinstance(event, StatusReported):
                self._check_duplicate_report(event)

    # -- one transition, checked ----------------------------------------------------------

    def apply(self, event: Input) -> list[Effect]:
        before = self.state
        encoded_before = encode_state(before)
        state, effects = step(before, event)

        assert encode_state(before) == encoded_before, "step mutated its input state"
        assert_indexes_consistent(state)
        assert_round_trips(state)

        for name in self.abandoned:
            assert state.instances[name].status == Status.ABANDONED, f"abandoned {name} changed status"
        for effect in effects:
            if isinstance(effect, RunInstance):
                self._check_run(state, effect.instance)
            elif isinstance(effect, InstanceChanged):
                assert state.instances[effect.instance.name].name == effect.instance.name
        fired = [e for e in effects if isinstance(e, Fired)]
        if isinstance(event, TriggerFired):
            assert len(fired) == 1 and fired[0].trigger == event.trigger
            runs = [e.instance.name for e in effects if isinstance(e, RunInstance)]
            assert [i.name for i in fired[0].scheduled] == runs
        for instance in state.unresolved_instances():
            assert not (instance.status == Status.UNSTARTED and _due(instance)), f"{instance.name} left waiting"
        self.abandoned |= {n for n, i in state.instances.items() if i.status == Status.ABANDONED}
        self.state = state
        return effects

    def _check_run(self, state: SessionState, instance: TaskInstance) -> None:
        config = instance.config
        assert instance.name not in self.abandoned, f"abandoned {instance.name} ran"
        assert instance.status == Status.SCHEDULED
        assert state.instances[instance.name] is instance
        missing = config.after - instance.kwargs.keys()
        assert not missing, f"{instance.name} ran without {missing}"
        if config.and_every is None:
            assert config.name not in self.tasks_run, f"{config.name} (no andEvery) ran twice"
        self.runs.append(instance)
        self.pending.append(instance.name)

    def _check_duplicate_report(self, report: StatusReported) -> None:
        """A second identical report (a runner re-ran the task) changes nothing."""
        state, effects = step(self.state, report)
        assert len(effects) == 1 and isinstance(effects[0], Ignored), effects
        assert effects[0].instance == report.instance
        assert state == self.state
        assert encode_state(state) == encode_state(self.state)


def _due(instance: TaskInstance) -> bool:
    """Whether every after-trigger or every unless-trigger has reached the instance."""
    config = instance.config
    return config.after <= instance.kwargs.keys() or bool(config.unless and config.unless <= instance.abandon_state)


def assert_indexes_consistent(state: SessionState) -> None:
    """Every derived index (by_task, unresolved, ...) equals a from-scratch rebuild."""
    rebuilt = SessionState.build(state.tasks, state.instances, state.latest_kwargs, state.metadata)
    for name in SessionState.DERIVED:
        assert getattr(state, name) == getattr(rebuilt, name), f"index {name} drifted"
    if state.alike is not None:  # the hint a fire leaves for the next must still hold
        names, kwargs, after = state.alike
        for name in names:
            instance = state.instances[name]
            assert instance.status == "unstarted", f"hinted {name} is {instance.status}"
            assert instance.kwargs is kwargs, f"hinted {name} holds other kwargs"
            assert instance.config.after == after and not instance.config.unless, f"hinted {name} waits otherwise"


def assert_round_trips(state: SessionState) -> None:
    encoded = encode_state(state)
    decoded = decode_state(encoded)
    assert encode_state(decoded) == encoded
    for name in SessionState.DERIVED:
        assert getattr(decoded, name) == getattr(state, name), f"index {name} differs after decoding"
    assert decoded.tasks == state.tasks


# -- properties ------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(configurations(), actions)
def test_invariants_hold_for_any_firing_and_completion_order(config: dict[str, Any], script: list) -> None:
    session = Session(config)
    for kind, arg in script:
        if kind == "fire":
            session.fire(arg)
        elif session.pending:
            session.finish(session.pending[arg % len(session.pending)])
    session.finish_all()
    # Nothing is left half-done: every instance is unstarted (waiting) or resolved.
    for instance in session.state.instances.values():
        assert instance.status in (Status.UNSTARTED, Status.FINISHED, Status.ABANDONED), instance


@PROPERTY_SETTINGS
@given(configurations(), firings)
def test_tasks_without_and_every_run_at_most_once(config: dict[str, Any], triggers: list[str]) -> None:
    session = Session(config)
    for trigger in triggers:
        session.fire(trigger)
        session.finish_all()
    once = [r.config.name for r in session.runs if r.config.and_every is None]
    assert len(once) == len(set(once))


@PROPERTY_SETTINGS
@given(configurations(with_unless=False), firings, st.randoms(use_true_random=False), st.booleans())
def test_firing_order_does_not_change_which_tasks_run(
    config: dict[str, Any], triggers: list[str], random: Any, finish_between: bool
) -> None:
    shuffled = list(triggers)
    random.shuffle(shuffled)
    ran = []
    for order in (triggers, shuffled):
        session = Session(config)
        for trigger in order:
            session.fire(trigger)
            if finish_between:
                session.finish_all()
        session.finish_all()
        ran.append(session.tasks_run)
    assert ran[0] == ran[1]


@PROPERTY_SETTINGS
@given(configurations(with_unless=False), firings)
def test_a_task_runs_exactly_when_its_triggers_fired(config: dict[str, Any], triggers: list[str]) -> None:
    """Without ``unless``: a task runs iff each of its after-triggers fired or cascaded."""
    session = Session(config)
    for trigger in triggers:
        session.fire(trigger)
        session.finish_all()
    fired = set(triggers)
    expected: set[str] = set()
    for name, directives in config.items():  # earlier tasks first: acyclic
        after = set(directives["after"]) | ({directives["andEvery"]} if "andEvery" in directives else set())
        if after <= fired | expected:
            expected.add(name)
    assert session.tasks_run == expected


@settings(max_examples=60, deadline=None)
@given(configurations(), firings)
def test_instance_kwargs_hold_only_triggers_that_fired(config: dict[str, Any], triggers: list[str]) -> None:
    session = Session(config)
    for trigger in triggers:
        session.fire(trigger, {"trigger": trigger})
        session.finish_all()
    fired = set(triggers) | session.tasks_run
    for instance in session.state.instances.values():
        assert set(instance.kwargs) <= fired
        assert set(instance.abandon_state) <= fired
        for trigger in set(instance.kwargs) & set(TRIGGERS):
            assert instance.kwargs[trigger] == {"trigger": trigger}


@settings(max_examples=8, deadline=None)
@given(st.integers(CHUNK + 1, 2 * CHUNK + 5), st.randoms(use_true_random=False))
def test_indexes_stay_right_when_their_entries_grow_long(pages: int, random: Any) -> None:
    """Past ``CHUNK`` names an index entry is chunked (``Names``); it must behave like the tuple."""
    session = Session(
        {
            "t_subject": {"after": ["start"], "run": "tests.noop"},
            "t_pages": {"after": ["t_subject"], "andEvery": "page", "run": "tests.noop"},
        }
    )
    for _ in range(pages):
        session.fire("page")
    state = session.state
    assert isinstance(state.by_task["t_pages"], Names)
    assert isinstance(state.unresolved["t_pages"], Names)
    assert isinstance(state.accepting["t_subject"], Names)
    expected = [f"t_pages#{n}" for n in range(pages)]
    assert [instance.name for instance in state.instances_of("t_pages")] == expected
    session.fire("start")
    session.finish("t_subject#0")  # its cascade schedules every page instance, oldest first
    assert session.pending == expected
    random.shuffle(session.pending)
    session.finish_all()  # indexes checked against a rebuild after every report
    assert not session.state.unresolved_instances()
