"""Per-arm running totals, kept in SQL as rows arrive, so an analysis costs the same at a
thousand requests and at a million.

`arm_stat` holds (n, sum, sum of squares) per experiment, arm and metric; the log writer adds
each batch's request metrics in the same transaction as the rows (counting only rows actually
inserted, so replays never count twice); a rating adds or adjusts the rating metrics in the
transaction that stores it. `arm_thread` records each (experiment, arm, thread) once, which
gives distinct threads per arm. `arm_latency` counts successful requests per latency bucket
(`sketch`), for percentiles and histograms. `rebuild_rollups` recomputes everything from the
raw rows.

A request that a candidate arm of its experiment could not serve as sent (`ineligible`: its
reasons, comma-separated) is left out of every request metric, so that both arms compare the
same kind of requests; it counts in `INELIGIBLE` and `ineligible_metric(reason)` instead (and
in its arm's threads). Ratings: `SCORE` and `HIGH` count ratings with a score, `THUMBS_UP`
those with a thumb, `RATED` the requests rated at all.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    case,
    delete,
    func,
    insert,
    inspect,
    literal,
    null,
    select,
    true,
)

from larrylab.db import ArmLatency, ArmStat, ArmThread, Feedback, RequestLog, insert_for
from larrylab.rollups import _sketch as sketch

# Metric names in arm_stat.
LATENCY, TTFT, ERRORS, FALLBACKS, REQUESTS = (
    "latency_ms",
    "ttft_ms",
    "error_rate",
    "fallback_rate",
    "requests",
)
SCORE, HIGH, RATED, THREADS = "mean_score", "high_rating_share", "rated_requests", "threads"
THUMBS_UP, INELIGIBLE = "thumbs_up_rate", "ineligible"

Totals = dict[tuple[str, str, str], list[float]]
Pair = tuple[str, str, str]  # (experiment, arm, thread id)
Buckets = Counter[tuple[str, str, str, int]]  # (experiment, arm, metric, bucket) -> count
Rating = tuple[int | None, int | None]  # (score 1-5 or None, thumb 1 up / 0 down or None)


def ineligible_metric(reason: str) -> str:
    """The arm_stat metric counting requests left out of an experiment for `reason`."""
    return f"{INELIGIBLE}:{reason}"


def _table(model: Any) -> Any:
    return model.__table__


def _add(totals: Totals, key: tuple[str, str, str], n: int, value: float) -> None:
    """Add (n = 1) or take away (n = -1) one observation of `value`."""
    t = totals.setdefault(key, [0.0, 0.0, 0.0])
    t[0] += n
    t[1] += n * value
    t[2] += n * value * value


RequestFacts = tuple[str | None, str | None, str, str, float, float | None, str | None, str | None]
"""What the rollups read of one stored request: (experiment, arm, thread id, status, latency ms,
time to first token ms, fallback_from, ineligible)."""


def _count_ineligible(totals: Totals, exp: str, arm: str, reasons: str, k: int = 1) -> None:
    """Count `k` requests left out for the comma-separated `reasons`."""
    for metric in (INELIGIBLE, *map(ineligible_metric, filter(None, reasons.split(",")))):
        t = totals.setdefault((exp, arm, metric), [0.0, 0.0, 0.0])
        t[0] += k
        t[1] += k
        t[2] += k


def count_requests(facts: Iterable[RequestFacts]) -> tuple[Totals, Buckets]:
    """The metric deltas (per experiment, arm and metric) and the latency and time-to-first-token
    bucket counts of newly stored requests, in one pass."""
    # per (experiment, arm): requests, errors, fallbacks, then the successful ones' latencies
    # and times to first token
    arms: dict[tuple[str, str], tuple[list[int], list[float], list[float]]] = {}
    totals: Totals = {}
    for exp, arm, _thread, status, latency, ttft, fallback, ineligible in facts:
        if exp is None or arm is None:
            continue
        if ineligible:
            _count_ineligible(totals, exp, arm, ineligible)
            continue
        acc = arms.get((exp, arm))
        if acc is None:
            acc = arms[(exp, arm)] = ([0, 0, 0], [], [])
        counts = acc[0]
        counts[0] += 1
        if status == "ok":
            acc[1].append(float(latency))
            if ttft is not None:
                acc[2].append(float(ttft))
        elif status == "error":
            counts[1] += 1
        if fallback:
            counts[2] += 1
    buckets: Buckets = Counter()
    for (exp, arm), (counts, latencies, ttfts) in arms.items():
        n, errors, fallbacks = counts
        totals[(exp, arm, REQUESTS)] = [n, 0.0, 0.0]
        totals[(exp, arm, ERRORS)] = [n, errors, errors]  # values are 0 or 1: squares as sums
        totals[(exp, arm, FALLBACKS)] = [n, fallbacks, fallbacks]
        for metric, values in ((LATENCY, latencies), (TTFT, ttfts)):
            if values:
                totals[(exp, arm, metric)] = [len(values), sum(values), sum(v * v for v in values)]
                for b, k in Counter(map(sketch.bucket, values)).items():
                    buckets[(exp, arm, metric, b)] += k
    return totals, buckets


def apply_buckets(conn: Connection, counts: Buckets) -> None:
    """Add bucket counts to arm_latency (atomic increments: safe with several writers)."""
    rows = [
        {"experiment": e, "arm": a, "metric": m, "bucket": b, "n": n}
        for (e, a, m, b), n in sorted(counts.items())
    ]
    _increment(conn, _table(ArmLatency), ["n"], rows)


def read_buckets(conn: Connection, experiment: str, metric: str) -> dict[str, sketch.Counts]:
    """arm -> (bucket, count) pairs in bucket order, for one experiment and metric."""
    c = _table(ArmLatency).c
    out: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for arm, b, n in conn.execute(
        select(c.arm, c.bucket, c.n)
        .where(c.experiment == experiment, c.metric == metric)
        .order_by(c.arm, c.bucket)
    ):
        out[arm].append((int(b), int(n)))
    return dict(out)


def apply_totals(conn: Connection, totals: Totals) -> None:
    """Add `totals` to arm_stat (atomic increments: safe with several writers)."""
    rows = [
        {"experiment": e, "arm": a, "metric": m, "n": int(t[0]), "sum": t[1], "sum_squares": t[2]}
        for (e, a, m), t in sorted(totals.items())
    ]
    _increment(conn, _table(ArmStat), ["n", "sum", "sum_squares"], rows)


def _increment(
    conn: Connection, table: Any, counters: list[str], rows: list[dict[str, Any]]
) -> None:
    """Insert `rows` into a rollup table, adding their `counters` to those of rows already
    there under the same primary key (one executemany; rows sorted by key avoid deadlocks)."""
    if not rows:
        return
    stmt = insert_for(conn.engine)(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[c.name for c in table.primary_key.columns],
        set_={name: table.c[name] + stmt.excluded[name] for name in counters},
    )
    conn.execute(stmt, rows)


def add_requests(
    conn: Connection, inserted: Sequence[RequestFacts], *, counted: Collection[Pair] = ()
) -> set[Pair]:
    """Count newly inserted requests: their metrics, their latency buckets and any thread new
    to its arm.

    Pairs in `counted` are known to be in arm_thread already (rows there are only ever added,
    or rebuilt from the request rows), so they are not sent again. Returns the batch's pairs.
    """
    totals, buckets = count_requests(inserted)
    pairs = {(exp, arm, thread) for exp, arm, thread, *_ in inserted if exp and arm}
    new = pairs.difference(counted)
    if new:
        table = _table(ArmThread)
        # executemany + RETURNING: one cached statement, whatever the batch size.
        stmt = (
            insert_for(conn.engine)(table)
            .on_conflict_do_nothing()
            .returning(table.c.experiment, table.c.arm)
        )
        rows = [{"experiment": e, "arm": a, "thread_id": t} for e, a, t in sorted(new)]
        for exp, arm in conn.execute(stmt, rows).all():
            _add(totals, (exp, arm, THREADS), 1, 0.0)
    apply_totals(conn, totals)
    apply_buckets(conn, buckets)
    return pairs


def rating_totals(
    experiment: str, arm: str, *, old: Rating | None, new: Rating, first_for_request: bool
) -> Totals:
    """Rating metric deltas when a rating goes from `old` (None: a new rating) to `new`."""
    totals: Totals = {}
    (old_score, old_thumb), (score, thumb) = old or (None, None), new
    for metric, before, after in (
        (SCORE, old_score, score),
        (HIGH, _high(old_score), _high(score)),
        (THUMBS_UP, old_thumb, thumb),
    ):
        key = (experiment, arm, metric)
        if before is not None:
            _add(totals, key, -1, float(before))
        if after is not None:
            _add(totals, key, 1, float(after))
    if first_for_request:
        _add(totals, (experiment, arm, RATED), 1, 1.0)
    return totals


def _high(score: int | None) -> int | None:
    """1 for a high score (4 or 5), 0 for another, None for none."""
    return None if score is None else int(score >= 4)


def read_rollup(
    conn: Connection, experiment: str
) -> dict[str, dict[str, tuple[int, float, float]]]:
    """arm -> metric -> (n, sum, sum of squares) for one experiment; a metric left with no
    observation (a rating's score taken away, say) is absent, as one that never had any."""
    c = _table(ArmStat).c
    out: dict[str, dict[str, tuple[int, float, float]]] = defaultdict(dict)
    for arm, metric, n, s, ss in conn.execute(
        select(c.arm, c.metric, c.n, c.sum, c.sum_squares).where(
            c.experiment == experiment, c.n != 0
        )
    ):
        out[arm][metric] = (int(n), float(s), float(ss))
    return dict(out)


def _moments(arm_col: Any, exp_col: Any, metric: str, value: Any, where: Any) -> Any:
    return (
        select(
            exp_col,
            arm_col,
            literal(metric),
            func.count(value),
            func.coalesce(func.sum(value), 0.0),
            func.coalesce(func.sum(value * value), 0.0),
        )
        .where(where, exp_col.is_not(None), arm_col.is_not(None))
        .group_by(exp_col, arm_col)
    )


def rebuild_rollups(engine: Engine) -> None:
    """Recompute arm_stat, arm_thread and arm_latency from the request and feedback rows."""
    with engine.begin() as conn:
        rebuild_rollups_on(conn)


def rebuild_rollups_on(conn: Connection, *, buckets: bool = True) -> None:
    """`rebuild_rollups` inside the caller's transaction (used by the migrations too: the one
    that made arm_stat and arm_thread ran before arm_latency existed, so `buckets=False`)."""
    r, f = _table(RequestLog).c, _table(Feedback).c
    eligible = _eligible(conn)
    ok = (r.status == "ok") & eligible
    request_metrics = [
        (REQUESTS, literal(0.0), eligible),
        (ERRORS, case((r.status == "error", 1.0), else_=0.0), eligible),
        (FALLBACKS, case((r.fallback_from.is_not(None), 1.0), else_=0.0), eligible),
        (LATENCY, r.latency_ms, ok),
        (TTFT, r.ttft_ms, ok & r.ttft_ms.is_not(None)),
    ]
    # a rating without a score (or a thumb) is not counted in its metric
    high = case((f.score.is_(None), null()), (f.score >= 4, 1.0), else_=0.0)
    rating_metrics = [(SCORE, f.score * 1.0), (HIGH, high)]
    if "thumb" in _columns(conn, Feedback):
        rating_metrics.append((THUMBS_UP, f.thumb * 1.0))
    cols = ["experiment", "arm", "metric", "n", "sum", "sum_squares"]
    stat = _table(ArmStat)
    conn.execute(delete(stat))
    conn.execute(delete(_table(ArmThread)))
    if buckets:
        rebuild_buckets_on(conn)
    for name, value, where in request_metrics:
        conn.execute(
            insert(stat).from_select(cols, _moments(r.arm, r.experiment, name, value, where))
        )
    for name, value in rating_metrics:
        conn.execute(
            insert(stat).from_select(
                cols, _moments(f.arm, f.experiment, name, value, value.is_not(None))
            )
        )
    if "ineligible" in _columns(conn, RequestLog):
        left_out: Totals = {}
        for exp, arm, reasons, k in conn.execute(
            select(r.experiment, r.arm, r.ineligible, func.count())
            .where(r.ineligible.is_not(None), r.experiment.is_not(None), r.arm.is_not(None))
            .group_by(r.experiment, r.arm, r.ineligible)
        ):
            _count_ineligible(left_out, exp, arm, reasons, k)
        apply_totals(conn, left_out)
    rated = (
        select(
            f.experiment,
            f.arm,
            literal(RATED),
            func.count(func.distinct(f.request_id)),
            func.count(func.distinct(f.request_id)) * 1.0,
            func.count(func.distinct(f.request_id)) * 1.0,
        )
        .where(f.request_id.is_not(None), f.experiment.is_not(None), f.arm.is_not(None))
        .group_by(f.experiment, f.arm)
    )
    conn.execute(insert(stat).from_select(cols, rated))
    pairs = (
        select(r.experiment, r.arm, r.thread_id)
        .where(r.experiment.is_not(None), r.arm.is_not(None))
        .distinct()
    )
    conn.execute(insert(_table(ArmThread)).from_select(["experiment", "arm", "thread_id"], pairs))
    threads = select(
        _table(ArmThread).c.experiment,
        _table(ArmThread).c.arm,
        literal(THREADS),
        func.count(),
        literal(0.0),
        literal(0.0),
    ).group_by(_table(ArmThread).c.experiment, _table(ArmThread).c.arm)
    conn.execute(insert(stat).from_select(cols, threads))


def _columns(conn: Connection, model: Any) -> set[str]:
    """The columns `model`'s table has in the database (a migration that rebuilds the rollups
    runs before later ones add theirs)."""
    return {c["name"] for c in inspect(conn).get_columns(_table(model).name)}


def _eligible(conn: Connection) -> Any:
    """The condition that a request row counts in the request metrics (`ineligible` unset)."""
    if "ineligible" in _columns(conn, RequestLog):
        return _table(RequestLog).c.ineligible.is_(None)
    return true()


def rebuild_buckets_on(conn: Connection) -> None:
    """Recount arm_latency from the successful request rows, streamed in chunks."""
    r = _table(RequestLog).c
    conn.execute(delete(_table(ArmLatency)))
    # `RequestFacts` without the thread, the fallback and `ineligible`, which the query filters
    query = select(
        r.experiment, r.arm, null(), r.status, r.latency_ms, r.ttft_ms, null(), null()
    ).where(r.status == "ok", _eligible(conn), r.experiment.is_not(None), r.arm.is_not(None))
    rows = conn.execute(query.execution_options(yield_per=10_000))
    counts: Buckets = Counter()
    for chunk in rows.partitions():
        counts.update(count_requests(tuple(row) for row in chunk)[1])
    apply_buckets(conn, counts)
