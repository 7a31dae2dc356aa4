"""ORM queries compiled once per process and then only executed.

Turning a QuerySet into SQL (resolving lookups, joins, annotations and ordering) costs 0.3-1.5 ms of CPU per
statement, several times what PostgreSQL spends running it, and the API's hottest requests run the same few
statements with different values every time (docs/BENCHMARKS.md). A ``PreparedQuery`` keeps the QuerySet as the one
statement of the query, written with the ORM, but compiles it once per database connection alias: with stand-in
values for its parameters, twice over, so that the positions where the stand-ins land in the compiled parameters are
found by difference and nothing is guessed from the SQL text. Each run executes the kept SQL with the real values
(prepared for the database as the ORM prepares them, by the field named for each parameter) and converts the rows
with the ORM's own converters (a SQLite datetime comes back a datetime, a JSON column a dict).

Only ``values_list`` QuerySets, whose rows are tuples; the shape of the query must not depend on the values (no
``None``, no lists whose length varies: use a subquery).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections
from django.db.models import DateField, DateTimeField, Field, QuerySet, TimeField, UUIDField
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute
from django.db.models.signals import post_init, pre_init

_counter = itertools.count(1)


def _stand_in(field: Field) -> Any:
    """A value for ``field`` that no real row has and that no other stand-in equals."""
    if isinstance(field, UUIDField):
        return uuid.uuid4()
    internal = field.get_internal_type()
    if internal == "DateTimeField":
        return datetime(2001, 1, 1, tzinfo=UTC) + timedelta(microseconds=next(_counter))
    if internal in ("AutoField", "BigAutoField", "IntegerField", "BigIntegerField", "PositiveIntegerField"):
        return 2_000_000_000 + next(_counter)
    return f"prepared-stand-in-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class _Compiled:
    sql: str
    params: tuple[Any, ...]
    slots: tuple[tuple[int, str], ...]  # (position in params, parameter name)
    converters: tuple[tuple[int, tuple[Callable, ...], Any], ...]
    width: int


class PreparedQuery:
    """``build(**values)`` returns a ``values_list`` QuerySet; ``fields`` names, per parameter, the model field whose
    database preparation its value needs (``ActionRequest._meta.pk`` for an action id)."""

    def __init__(self, build: Callable[..., QuerySet], **fields: Field) -> None:
        self._build = build
        self._fields = fields
        self._compiled: dict[str, _Compiled] = {}

    def rows(self, using: str = "default", **values: Any) -> list[tuple]:
        compiled = self._compiled.get(using) or self._compile(using)
        connection = connections[using]
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, self._bound(compiled, connection, values))
            fetched = cursor.fetchall()
        return self._converted(compiled, fetched, connection)

    def statement(self, using: str = "default", **values: Any) -> tuple[str, list[Any]]:
        """The SQL and parameters ``rows`` would execute for ``values`` (to EXPLAIN it, say)."""
        compiled = self._compiled.get(using) or self._compile(using)
        return compiled.sql, self._bound(compiled, connections[using], values)

    def _bound(self, compiled: _Compiled, connection: Any, values: dict[str, Any]) -> list[Any]:
        params = list(compiled.params)
        for position, name in compiled.slots:
            params[position] = self._fields[name].get_db_prep_value(values[name], connection, prepared=False)
        return params

    @staticmethod
    def _converted(compiled: _Compiled, fetched: Sequence[Sequence[Any]], connection: Any) -> list[tuple]:
        if not compiled.converters and all(len(row) == compiled.width for row in fetched):
            return [tuple(row) for row in fetched]
        converted = []
        for row in fetched:
            out = list(row[: compiled.width])
            for position, convs, expression in compiled.converters:
                value = out[position]
                for convert in convs:
                    value = convert(value, expression, connection)
                out[position] = value
            converted.append(tuple(out))
        return converted

    def first(self, using: str = "default", **values: Any) -> tuple | None:
        found = self.rows(using, **values)
        return found[0] if found else None

    async def arows(self, aconnection: Any, using: str = "default", **values: Any) -> list[tuple]:
        """``rows`` run on ``aconnection``, a psycopg ``AsyncConnection`` made with ``using``'s parameters and adapters
        (approvals.api.agent_reads): the same SQL, values and converters, without a thread. Compiling may need the
        database's version, so a statement not yet compiled in this process is compiled in a thread, once."""
        compiled = self._compiled.get(using)
        if compiled is None:
            compiled = await sync_to_async(self._compile, thread_sensitive=False)(using)
        connection = connections[using]
        cursor = await aconnection.execute(compiled.sql, self._bound(compiled, connection, values))
        return self._converted(compiled, await cursor.fetchall(), connection)

    async def afirst(self, aconnection: Any, using: str = "default", **values: Any) -> tuple | None:
        found = await self.arows(aconnection, using, **values)
        return found[0] if found else None

    def _compile(self, using: str) -> _Compiled:
        first = {name: _stand_in(field) for name, field in self._fields.items()}
        sql, params, compiler = self._as_sql(using, first)
        slots: list[tuple[int, str]] = []
        for name, field in self._fields.items():
            other_sql, other_params, _ = self._as_sql(using, {**first, name: _stand_in(field)})
            if other_sql != sql or len(other_params) != len(params):
                raise ValueError(f"the query's shape depends on {name!r}: it cannot be prepared")
            changed = [i for i, (a, b) in enumerate(zip(params, other_params, strict=True)) if a != b]
            if not changed:
                raise ValueError(f"{name!r} does not reach the query's parameters")
            slots += [(i, name) for i in changed]
        width = compiler.col_count
        selected = [column[0] for column in compiler.select[:width]]
        converters = tuple(
            (position, tuple(convs), expression)
            for position, (convs, expression) in compiler.get_converters(selected).items()
        )
        compiled = _Compiled(sql, tuple(params), tuple(sorted(slots)), converters, width)
        self._compiled[using] = compiled
        return compiled

    def _as_sql(self, using: str, values: dict[str, Any]) -> tuple[str, Sequence[Any], Any]:
        queryset = self._build(**values)
        compiler = queryset.query.get_compiler(using=using)
        sql, params = compiler.as_sql()
        return sql, list(params), compiler


def concrete_columns(model: type, through: str = "") -> list[str]:
    """``values_list`` names of ``model``'s concrete fields, in the order ``Model.from_db`` takes their values;
    ``through`` is the lookup from the query's model (``"agent__"``)."""
    return [f"{through}{field.attname}" for field in model._meta.concrete_fields]  # type: ignore[attr-defined]


def from_row(model: Any, attnames: Sequence[str], values: Sequence[Any], using: str = "default") -> Any:
    """``model.from_db(using, attnames, values)``: the instance of a row read with the fields ``attnames`` (in the
    model's field order, as ``from_db`` takes them; any other field loads on first use), made without
    ``Model.__init__`` where that only puts each value in the instance's ``__dict__``. A page of fifty actions spent a
    fifth of its CPU in ``__init__`` walking every field of the model for each row (docs/BENCHMARKS.md section 9); a
    model with init signals, or a field whose descriptor takes part in assignment (a file, a generic relation), is
    made by ``from_db``.

    The instance keeps what was read (``attnames`` and ``values`` themselves, not a copy: a reference each), so that
    ``update`` writes only the columns changed since."""
    if not _assigned_plainly(model):
        instance = model.from_db(using, attnames, values)
        instance._state.row_read = (attnames, values)
        return instance
    instance = model.__new__(model)
    instance.__dict__.update(zip(attnames, values, strict=True))
    instance._state = state = ModelState()
    state.adding, state.db = False, using
    state.row_read = (attnames, values)
    return instance


# Descriptors whose __set__ on a new instance is a plain __dict__ write: a field's own, a foreign key's id (which would
# also drop a cached related object, and a new instance has none).
_PLAIN_DESCRIPTORS = (DeferredAttribute, ForeignKeyDeferredAttribute)
_plainly: dict[type, bool] = {}


def _assigned_plainly(model: Any) -> bool:
    """Asked once per model, when its first row is read: by then the apps are ready and their signals connected."""
    if model not in _plainly:
        descriptors = (
            next(vars(k)[f.attname] for k in model.__mro__ if f.attname in vars(k)) for f in model._meta.concrete_fields
        )
        _plainly[model] = (
            all(type(descriptor) in _PLAIN_DESCRIPTORS for descriptor in descriptors)
            and not pre_init.has_listeners(model)
            and not post_init.has_listeners(model)
        )
    return _plainly[model]


class PreparedInstances:
    """A ``PreparedQuery`` whose rows come back as ``model`` instances with the related rows named in ``related``
    attached, as ``select_related`` gives them (a null foreign key gives None). ``build(**values)`` returns a
    QuerySet of ``model`` (filtered, locked, sliced: anything but ``values_list``, which is added here).

    ``extra``: expressions read after the row's columns in the same statement (a subquery: something the caller needs
    as of the same moment, without a round trip of its own), given back by ``first_and_extra``."""

    def __init__(
        self,
        model: Any,
        build: Callable[..., QuerySet],
        *,
        related: Sequence[str] = (),
        extra: Sequence[Any] = (),
        **fields: Field,
    ):
        self._model = model
        self._related = [(name, model._meta.get_field(name)) for name in related]
        # Each instance's fields, in the row's order: the model's, then each related model's.
        self._attnames = [tuple(concrete_columns(model))] + [
            tuple(concrete_columns(field.related_model)) for _, field in self._related
        ]
        self._width = sum(len(attnames) for attnames in self._attnames)
        columns = concrete_columns(model) + [
            column for name, field in self._related for column in concrete_columns(field.related_model, f"{name}__")
        ]
        self._query = PreparedQuery(lambda **values: build(**values).values_list(*columns, *extra), **fields)

    def all(self, using: str = "default", **values: Any) -> list[Any]:
        return [self._instance(row, using) for row in self._query.rows(using, **values)]

    def first(self, using: str = "default", **values: Any) -> Any | None:
        row = self._query.first(using, **values)
        return None if row is None else self._instance(row, using)

    def first_and_extra(self, using: str = "default", **values: Any) -> tuple[Any, tuple] | None:
        """(the first instance, the values of ``extra`` read with it), or None."""
        row = self._query.first(using, **values)
        return None if row is None else (self._instance(row, using), row[self._width :])

    def _instance(self, row: tuple, using: str) -> Any:
        values, start = [], 0
        for attnames in self._attnames:
            values.append(row[start : start + len(attnames)])
            start += len(attnames)
        instance = from_row(self._model, self._attnames[0], values[0], using)
        for (name, field), attnames, related in zip(self._related, self._attnames[1:], values[1:], strict=True):
            if getattr(instance, field.attname) is None:
                setattr(instance, name, None)
            else:
                setattr(instance, name, from_row(field.related_model, attnames, related, using))
        return instance


@dataclass(frozen=True)
class _Insert:
    sql: str
    fields: tuple[Field, ...]
    returning: Field | None


_inserts: dict[tuple[type, str], _Insert] = {}


def insert(instance: Any, using: str = "default") -> Any:
    """Write a new row for ``instance`` as ``save(force_insert=True)`` would (each field's ``pre_save`` and database
    preparation, the database's id back for an auto field), by an INSERT written once per model and database. The
    models written on every proposal and decision have no save signals to skip (approvals has no receivers)."""
    sql, params, returning = insert_statement(instance, using)
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        inserted(instance, cursor.fetchone()[0] if returning else None, using)
    return instance


def insert_statement(instance: Any, using: str = "default") -> tuple[str, list[Any], bool]:
    """(the INSERT ``insert`` runs for ``instance``, its parameters, whether it returns the row's id): for a caller that
    runs it with other statements (audit.chain writes outbox messages with a transaction's events). ``inserted``
    then finishes the instance."""
    model = type(instance)
    connection = connections[using]
    statement = _inserts.get((model, connection.vendor))
    if statement is None:
        statement = _inserts[(model, connection.vendor)] = _insert_statement(model, connection)
    params = [
        field.get_db_prep_save(field.pre_save(instance, True), connection=connection) for field in statement.fields
    ]
    return statement.sql, params, statement.returning is not None


def inserted(instance: Any, returned_id: Any, using: str = "default") -> None:
    """``instance`` as ``save()`` leaves it once its row is written; ``returned_id``: the id the database made."""
    statement = _inserts[(type(instance), connections[using].vendor)]
    if statement.returning is not None:
        setattr(instance, statement.returning.attname, returned_id)
    instance._state.adding = False
    instance._state.db = using


def _insert_statement(model: Any, connection: Any) -> _Insert:
    meta = model._meta
    auto = meta.auto_field if meta.auto_field is not None and meta.auto_field.db_returning else None
    fields = tuple(field for field in meta.concrete_fields if field is not auto)
    quote = connection.ops.quote_name
    # Names from the model's own metadata, quoted by the backend; every value is a parameter.
    sql = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608
        quote(meta.db_table),
        ", ".join(quote(field.column) for field in fields),
        ", ".join(
            field.get_placeholder(None, None, connection) if hasattr(field, "get_placeholder") else "%s"
            for field in fields
        ),
    )
    if auto is not None:
        sql += f" RETURNING {quote(auto.column)}"
    return _Insert(sql, fields, auto)


# Values that cannot change where they stand: one still equal to what was read was not changed. Anything else (a JSON
# dict or list, changed in place by ``action.params["x"] = 1`` and then still the very object that was read, so that
# comparing tells nothing) is written every time.
_IMMUTABLE = (str, int, float, Decimal, date, time, timedelta, uuid.UUID, bytes, type(None))
# Field.pre_save returns the field's value; these return it too on an update, unless the field is auto_now.
_PLAIN_PRE_SAVE = (Field.pre_save, DateField.pre_save, DateTimeField.pre_save, TimeField.pre_save)
_UNREAD = object()


@dataclass(frozen=True)
class _Columns:
    """A model's columns as ``update`` sees them."""

    pk: str
    attnames: tuple[str, ...]  # every concrete field's, in the model's order: what a written row is known to hold
    fields: dict[str, Field]  # attname: field, for every concrete field but the primary key, in the model's order
    always: frozenset[str]  # fields whose pre_save gives a new value at each write (auto_now): written every time


_columns: dict[type, _Columns] = {}
# Per (model, database vendor, the fields written): the statement's text depends on which columns it writes.
_updates: dict[tuple[type, str, tuple[Field, ...]], str] = {}


def update(instance: Any, using: str = "default") -> None:
    """Write an existing row as ``save()`` would leave it (each field's ``pre_save`` and database preparation), by an
    UPDATE by primary key of only the columns whose value changed since the row was read (``from_row`` keeps what it
    read): preparing the 47 parameters of a whole action and executing their UPDATE cost a decision about 0.2 ms of
    CPU more than the few columns it changes (issue 21). Each statement is written once per model, database and set
    of columns.

    Written whatever it compares to: a field whose value can change in place (JSON), a field that was not read, a
    field whose ``pre_save`` sets a new value (auto_now); every field of an instance with no record of its read (made
    by ``Model.__init__`` or ``from_db``) or whose primary key is no longer the one read. A column the instance did
    not change is left as it is in the row, so a write made meanwhile by a statement of the same transaction (a
    queryset's ``update``) stands. A partly read row (deferred fields) is written by ``save()``, which knows to write
    only what was read. Afterwards the instance's record is the instance as written, so that a second ``update`` in
    the same transaction writes only what changed since the first."""
    if instance.get_deferred_fields():
        instance.save(using=using)
        return
    statement = update_statement(instance, using)
    if statement is not None:
        with connections[using].cursor() as cursor:
            cursor.execute(*statement)


def update_statement(instance: Any, using: str = "default") -> tuple[str, list[Any]] | None:
    """(the UPDATE ``update`` runs for ``instance``, its parameters), or None when there is nothing to write; for a
    caller that runs it with other statements (audit.chain). The instance's record of its row is the instance as
    this statement writes it, from now on. Not for an instance with deferred fields (``update`` saves those)."""
    model = type(instance)
    columns = _columns.get(model) or _columns_of(model)
    fields = _changed(instance, columns)
    statement = None
    if fields:  # with no auto_now field and nothing changed, the row already holds every value
        connection = connections[using]
        sql = _updates.get((model, connection.vendor, fields)) or _update_sql(model, connection, fields)
        params = [field.get_db_prep_save(field.pre_save(instance, False), connection=connection) for field in fields]
        params.append(model._meta.pk.get_db_prep_value(instance.pk, connection))
        statement = (sql, params)
    now = instance.__dict__
    instance._state.row_read = (columns.attnames, tuple(now[attname] for attname in columns.attnames))
    return statement


def _changed(instance: Any, columns: _Columns) -> tuple[Field, ...]:
    read = getattr(instance._state, "row_read", None)
    if read is None:
        return tuple(columns.fields.values())
    was = dict(zip(*read, strict=True))
    if was.get(columns.pk, _UNREAD) != instance.pk:  # the instance now stands for another row than the one read
        return tuple(columns.fields.values())
    now = instance.__dict__
    return tuple(
        field
        for attname, field in columns.fields.items()
        if attname in columns.always
        or not isinstance(now[attname], _IMMUTABLE)
        or was.get(attname, _UNREAD) != now[attname]
    )


def _columns_of(model: Any) -> _Columns:
    meta = model._meta
    fields = {field.attname: field for field in meta.concrete_fields if not field.primary_key}
    always = frozenset(
        attname
        for attname, field in fields.items()
        if getattr(field, "auto_now", False) or type(field).pre_save not in _PLAIN_PRE_SAVE
    )
    columns = _columns[model] = _Columns(
        meta.pk.attname, tuple(field.attname for field in meta.concrete_fields), fields, always
    )
    return columns


def _update_sql(model: Any, connection: Any, fields: tuple[Field, ...]) -> str:
    meta = model._meta
    quote = connection.ops.quote_name
    # Names from the model's own metadata, quoted by the backend; every value is a parameter.
    sql = _updates[(model, connection.vendor, fields)] = "UPDATE {} SET {} WHERE {} = %s".format(  # noqa: S608
        quote(meta.db_table), ", ".join(f"{quote(field.column)} = %s" for field in fields), quote(meta.pk.column)
    )
    return sql
