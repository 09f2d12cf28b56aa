/// The `pgws` schema: durable channels, their messages and the SQL API around them. One
/// idempotent script (every statement can run again) plus a version row, so a server can
/// install or upgrade it at start and a team that applies migrations itself can print it
/// (`postgres-websockets --print-schema`) and let the server only check the version.
public enum DurableSchema {
    /// Bumped whenever the script changes what it creates (2: revocations, 3: presence).
    public static let version = 3

    /// Whether the server installs the schema, only checks it, or leaves PostgreSQL alone.
    public enum Mode: String, Sendable {
        case off
        case on
        case check
    }

    /// Where `pgws.make_durable` and `pgws.make_ephemeral` announce changes.
    static let controlChannel = "pgws:control"
    /// Where `pgws.disconnect` and `pgws.revoke` reach every server (`RevocationSignal`).
    static let revokeChannel = "pgws:revoke"
    /// Where presence changes reach every server (`PresenceSignal`).
    static let presenceChannel = "pgws:presence"
    /// The internal channel a durable channel's messages are signalled on (see `signal_channel`).
    static let signalPrefix = "pgws:"
    /// A larger payload is not carried in the signal: servers read it from the table.
    static let maxSignalledPayload = 7900
    /// `pg_advisory_xact_lock` keys: installing, pruning.
    static let installLock: Int64 = 0x7067_7773_0001
    static let pruneLock: Int64 = 0x7067_7773_0002
    static let sweepLock: Int64 = 0x7067_7773_0003
    /// The first key of the two-key advisory locks that serialize a channel's presence changes.
    static let presenceLockSpace: Int32 = 0x7067_7774
    /// The first key of the two-key advisory locks that serialize a channel's publishers.
    static let publishLockSpace: Int32 = 0x7067_7773

    /// The whole script, as `--print-schema` prints it.
    public static let script = """
        -- postgres-websockets: durable channels, revocation and presence (schema version \(version)).
        -- Safe to run again: every statement creates what is missing or replaces a function.
        CREATE SCHEMA IF NOT EXISTS pgws;

        CREATE TABLE IF NOT EXISTS pgws.schema_version (version integer NOT NULL);

        -- One row per durable channel, with the internal channel its messages are signalled on.
        CREATE TABLE IF NOT EXISTS pgws.channels (
            name text PRIMARY KEY CHECK (name <> ''),
            retention interval NOT NULL DEFAULT interval '1 day' CHECK (retention > interval '0'),
            max_messages bigint CHECK (max_messages > 0),
            signal text NOT NULL
        );

        -- A channel's offsets are 1, 2, 3, ... in commit order: pgws.store takes the channel's
        -- transaction-level advisory lock, held until its transaction ends, and numbers the
        -- message after the newest one committed (pruning always keeps that one). No foreign
        -- key to pgws.channels: its check would cost more than the rest of a publish.
        CREATE TABLE IF NOT EXISTS pgws.messages (
            channel text NOT NULL,
            "offset" bigint NOT NULL,
            payload text NOT NULL,
            published_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (channel, "offset")
        );

        -- The internal channel a durable channel's messages are signalled on: a hash, because
        -- channel names may use all 63 bytes PostgreSQL allows.
        CREATE OR REPLACE FUNCTION pgws.signal_channel(channel text) RETURNS text
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS $$ SELECT '\(signalPrefix)' || left(encode(sha256(convert_to(channel, 'UTF8')), 'hex'), 32) $$;

        CREATE OR REPLACE FUNCTION pgws.make_durable(
            channel text, retention interval DEFAULT interval '1 day', max_messages bigint DEFAULT NULL
        ) RETURNS void
        LANGUAGE plpgsql
        AS $$
        BEGIN
            IF make_durable.channel IS NULL OR make_durable.channel = '' THEN
                RAISE EXCEPTION 'pgws.make_durable: the channel name is empty' USING ERRCODE = '22023';
            END IF;
            INSERT INTO pgws.channels AS c (name, retention, max_messages, signal)
            VALUES (
                make_durable.channel, coalesce(make_durable.retention, interval '1 day'), make_durable.max_messages,
                pgws.signal_channel(make_durable.channel))
            ON CONFLICT (name) DO UPDATE SET retention = excluded.retention, max_messages = excluded.max_messages;
            PERFORM pg_notify(
                '\(controlChannel)', 'durable ' || pgws.newest_offset(make_durable.channel) || ' ' || make_durable.channel);
        END
        $$;

        -- The offset of the channel's newest committed message, 0 when it has none.
        CREATE OR REPLACE FUNCTION pgws.newest_offset(channel text) RETURNS bigint
        LANGUAGE sql STABLE STRICT
        AS $$
            SELECT coalesce(max(m."offset"), 0) FROM pgws.messages AS m WHERE m.channel = newest_offset.channel
        $$;

        -- Stops storing a channel's messages and deletes the ones kept.
        CREATE OR REPLACE FUNCTION pgws.make_ephemeral(channel text) RETURNS void
        LANGUAGE plpgsql
        AS $$
        BEGIN
            DELETE FROM pgws.channels AS c WHERE c.name = make_ephemeral.channel;
            IF FOUND THEN
                DELETE FROM pgws.messages AS m WHERE m.channel = make_ephemeral.channel;
                PERFORM pg_notify('\(controlChannel)', 'ephemeral 0 ' || make_ephemeral.channel);
            END IF;
        END
        $$;

        -- Stores a message of a durable channel and signals it; NULL when the channel is not
        -- durable. The servers' own path for client messages (pgws.send) and pgws.publish's core.
        CREATE OR REPLACE FUNCTION pgws.store(channel text, payload text) RETURNS bigint
        LANGUAGE plpgsql
        AS $$
        \(storeBody(name: "store", whenNotDurable: "RETURN NULL;"))
        $$;

        -- Publishes a message on a durable channel inside the caller's transaction: visible and
        -- delivered when that transaction commits, never if it rolls back. Returns its offset.
        -- (pgws.store's body, not a call to it: a nested PL/pgSQL call costs a tenth of a publish.)
        CREATE OR REPLACE FUNCTION pgws.publish(channel text, payload text) RETURNS bigint
        LANGUAGE plpgsql
        AS $$
        \(storeBody(name: "publish", whenNotDurable: """
            RAISE EXCEPTION 'pgws.publish: channel % is not durable', publish.channel
                        USING ERRCODE = '42704', HINT = 'Call pgws.make_durable first.';
            """))
        $$;

        -- What a server does with a client message: stored on a durable channel (its offset),
        -- a plain NOTIFY on any other (NULL).
        CREATE OR REPLACE FUNCTION pgws.send(channel text, payload text) RETURNS bigint
        LANGUAGE plpgsql
        AS $$
        DECLARE
            assigned bigint;
        BEGIN
            assigned := pgws.store(send.channel, send.payload);
            IF assigned IS NULL THEN
                PERFORM pg_notify(send.channel, send.payload);
            END IF;
            RETURN assigned;
        END
        $$;

        -- Deletes up to max_rows messages past their channel's retention (older than retention,
        -- or older than the newest max_messages), oldest first, in small steps, never a channel's
        -- newest one (it carries the channel's offset). One server at a time; another's call
        -- returns 0 at once. Publishers are never blocked: it locks only the rows it deletes.
        CREATE OR REPLACE FUNCTION pgws.prune(max_rows integer DEFAULT 10000) RETURNS bigint
        LANGUAGE plpgsql
        AS $$
        DECLARE
            c record;
            deleted bigint := 0;
            step bigint;
            oldest bigint;
            newest bigint;
            count_cut bigint;
            time_cut timestamptz;
        BEGIN
            IF NOT pg_try_advisory_xact_lock(\(pruneLock)) THEN
                RETURN 0;
            END IF;
            FOR c IN SELECT name, retention, max_messages FROM pgws.channels LOOP
                newest := pgws.newest_offset(c.name);
                count_cut := CASE WHEN c.max_messages IS NULL THEN 0 ELSE newest - c.max_messages END;
                time_cut := now() - c.retention;
                LOOP
                    EXIT WHEN deleted >= prune.max_rows;
                    SELECT min(m."offset") INTO oldest FROM pgws.messages AS m WHERE m.channel = c.name;
                    EXIT WHEN oldest IS NULL;
                    DELETE FROM pgws.messages AS m
                    WHERE m.channel = c.name
                        AND m."offset" >= oldest AND m."offset" < oldest + least(1000, prune.max_rows - deleted)
                        AND m."offset" < newest
                        AND (m."offset" <= count_cut OR m.published_at < time_cut);
                    GET DIAGNOSTICS step = ROW_COUNT;
                    EXIT WHEN step = 0;
                    deleted := deleted + step;
                END LOOP;
            END LOOP;
            RETURN deleted;
        END
        $$;

        -- Revocations in force: every server refuses handshakes whose claims contain `filter`
        -- until `until`. Servers read them when they connect; pgws.revoke announces new ones.
        CREATE TABLE IF NOT EXISTS pgws.revocations (
            id bigserial PRIMARY KEY,
            filter jsonb NOT NULL CHECK (jsonb_typeof(filter) = 'object'),
            until timestamptz NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );

        -- Closes, on every server, the open sockets whose claims contain `filter` (close code
        -- 3003, `reason` as the close reason), when the calling transaction commits.
        CREATE OR REPLACE FUNCTION pgws.disconnect(filter jsonb, reason text DEFAULT 'disconnected') RETURNS void
        LANGUAGE plpgsql
        AS $$
        BEGIN
            IF disconnect.filter IS NULL OR jsonb_typeof(disconnect.filter) <> 'object' THEN
                RAISE EXCEPTION 'pgws.disconnect: the filter must be a JSON object' USING ERRCODE = '22023';
            END IF;
            PERFORM pg_notify('\(revokeChannel)', jsonb_build_object(
                'filter', disconnect.filter, 'reason', coalesce(disconnect.reason, ''))::text);
        END
        $$;

        -- pgws.disconnect, and handshakes whose claims contain `filter` are refused (401, `token
        -- revoked`) until `until`. Revocations that ended are deleted here.
        CREATE OR REPLACE FUNCTION pgws.revoke(filter jsonb, until timestamptz) RETURNS void
        LANGUAGE plpgsql
        AS $$
        BEGIN
            IF revoke.filter IS NULL OR jsonb_typeof(revoke.filter) <> 'object' THEN
                RAISE EXCEPTION 'pgws.revoke: the filter must be a JSON object' USING ERRCODE = '22023';
            END IF;
            IF revoke.until IS NULL THEN
                RAISE EXCEPTION 'pgws.revoke: until is required' USING ERRCODE = '22023';
            END IF;
            DELETE FROM pgws.revocations AS r WHERE r.until <= now();
            INSERT INTO pgws.revocations (filter, until) VALUES (revoke.filter, revoke.until);
            PERFORM pg_notify('\(revokeChannel)', jsonb_build_object(
                'filter', revoke.filter, 'reason', 'token revoked',
                'until', extract(epoch FROM revoke.until))::text);
        END
        $$;

        -- Presence: one row per open socket and channel it reads, for every server with
        -- `presence = on`. Unlogged: the servers write their rows again after a crash. A
        -- server that stops saying it is alive has its rows removed by the others.
        CREATE UNLOGGED TABLE IF NOT EXISTS pgws.presence_servers (
            server_id text PRIMARY KEY,
            heartbeat_at timestamptz NOT NULL DEFAULT now()
        );

        -- member_id: the value of the socket's `presence-claim` (NULL: not a member); member:
        -- what clients are shown, {"id": ..., "claims": {the presence-fields}}.
        CREATE UNLOGGED TABLE IF NOT EXISTS pgws.presence (
            server_id text NOT NULL,
            socket_id bigint NOT NULL,
            channel text NOT NULL,
            member_id jsonb,
            member jsonb,
            claims jsonb NOT NULL,
            connected_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (server_id, socket_id, channel)
        );
        CREATE INDEX IF NOT EXISTS presence_channel_member ON pgws.presence (channel, member_id);

        -- Announces, once per (channel, member), the leave of each member of the deleted rows
        -- `gone` that has no socket left on the channel.
        CREATE OR REPLACE FUNCTION pgws.presence_announce_leaves(gone jsonb) RETURNS void
        LANGUAGE plpgsql
        AS $$
        BEGIN
            PERFORM pg_notify('\(presenceChannel)', jsonb_build_object(
                    'type', 'leave', 'channel', l.g->>'channel', 'member', l.g->'member')::text)
            FROM (
                SELECT DISTINCT ON (g->>'channel', g->'member_id') g
                FROM jsonb_array_elements(presence_announce_leaves.gone) AS g
            ) AS l
            WHERE NOT EXISTS (
                SELECT FROM pgws.presence AS p WHERE p.channel = l.g->>'channel' AND p.member_id = l.g->'member_id');
        END
        $$;

        -- A server's batch of changes: rows `added` ({socket, channel, member_id, member,
        -- claims}) and `removed` ({socket, channel}). Announces a join when a member's first
        -- socket on a channel arrives and a leave when its last one goes, whichever servers
        -- they are on: every server locks the channels it changes in one order. Returns
        -- whether the server was known (false: its rows were swept and must be written again).
        CREATE OR REPLACE FUNCTION pgws.presence_apply(server text, added jsonb, removed jsonb) RETURNS boolean
        LANGUAGE plpgsql
        AS $$
        DECLARE
            known boolean;
            arrived jsonb;
            gone jsonb;
        BEGIN
            PERFORM pg_advisory_xact_lock(\(presenceLockSpace), l.h)
            FROM (
                SELECT DISTINCT hashtext(e->>'channel') AS h
                FROM jsonb_array_elements(presence_apply.added || presence_apply.removed) AS e
            ) AS l
            ORDER BY l.h;
            UPDATE pgws.presence_servers AS s SET heartbeat_at = now() WHERE s.server_id = presence_apply.server;
            known := FOUND;
            IF NOT known THEN
                INSERT INTO pgws.presence_servers (server_id) VALUES (presence_apply.server);
            END IF;
            SELECT coalesce(jsonb_agg(n.e), '[]') INTO arrived
            FROM (
                SELECT DISTINCT ON (e->>'channel', e->'member_id') e
                FROM jsonb_array_elements(presence_apply.added) AS e
                WHERE e ? 'member_id' AND NOT EXISTS (
                    SELECT FROM pgws.presence AS p WHERE p.channel = e->>'channel' AND p.member_id = e->'member_id')
            ) AS n;
            INSERT INTO pgws.presence (server_id, socket_id, channel, member_id, member, claims)
            SELECT presence_apply.server, (e->>'socket')::bigint, e->>'channel', e->'member_id', e->'member', e->'claims'
            FROM jsonb_array_elements(presence_apply.added) AS e
            ON CONFLICT DO NOTHING;
            WITH deleted AS (
                DELETE FROM pgws.presence AS p
                USING jsonb_array_elements(presence_apply.removed) AS e
                WHERE p.server_id = presence_apply.server AND p.socket_id = (e->>'socket')::bigint
                    AND p.channel = e->>'channel'
                RETURNING p.channel, p.member_id, p.member
            )
            SELECT coalesce(jsonb_agg(d), '[]') INTO gone FROM deleted AS d WHERE d.member_id IS NOT NULL;
            PERFORM pg_notify('\(presenceChannel)', jsonb_build_object(
                    'type', 'join', 'channel', a->>'channel', 'member', a->'member')::text)
            FROM jsonb_array_elements(arrived) AS a;
            PERFORM pgws.presence_announce_leaves(gone);
            RETURN known;
        END
        $$;

        -- Removes the servers `servers` and their rows, announcing the leaves.
        CREATE OR REPLACE FUNCTION pgws.presence_drop(servers text[]) RETURNS void
        LANGUAGE plpgsql
        AS $$
        DECLARE
            gone jsonb;
        BEGIN
            PERFORM pg_advisory_xact_lock(\(presenceLockSpace), l.h)
            FROM (
                SELECT DISTINCT hashtext(p.channel) AS h FROM pgws.presence AS p
                WHERE p.server_id = ANY (presence_drop.servers)
            ) AS l
            ORDER BY l.h;
            DELETE FROM pgws.presence_servers AS s WHERE s.server_id = ANY (presence_drop.servers);
            WITH deleted AS (
                DELETE FROM pgws.presence AS p WHERE p.server_id = ANY (presence_drop.servers)
                RETURNING p.channel, p.member_id, p.member
            )
            SELECT coalesce(jsonb_agg(d), '[]') INTO gone FROM deleted AS d WHERE d.member_id IS NOT NULL;
            PERFORM pgws.presence_announce_leaves(gone);
        END
        $$;

        -- A server's heartbeat: it is alive, and the servers not heard from within `stale`
        -- are dropped (one server sweeps at a time). Returns whether the server was known.
        CREATE OR REPLACE FUNCTION pgws.presence_heartbeat(server text, stale interval) RETURNS boolean
        LANGUAGE plpgsql
        AS $$
        DECLARE
            known boolean;
            dead text[];
        BEGIN
            UPDATE pgws.presence_servers AS s SET heartbeat_at = now()
            WHERE s.server_id = presence_heartbeat.server;
            known := FOUND;
            IF NOT known THEN
                INSERT INTO pgws.presence_servers (server_id) VALUES (presence_heartbeat.server)
                ON CONFLICT DO NOTHING;
            END IF;
            IF pg_try_advisory_xact_lock(\(sweepLock)) THEN
                SELECT array_agg(s.server_id) INTO dead FROM pgws.presence_servers AS s
                WHERE s.heartbeat_at < now() - presence_heartbeat.stale;
                IF dead IS NOT NULL THEN
                    PERFORM pgws.presence_drop(dead);
                END IF;
                -- Rows whose server row is gone (a server dropped while it was writing).
                SELECT array_agg(DISTINCT p.server_id) INTO dead FROM pgws.presence AS p
                WHERE NOT EXISTS (SELECT FROM pgws.presence_servers AS s WHERE s.server_id = p.server_id);
                IF dead IS NOT NULL THEN
                    PERFORM pgws.presence_drop(dead);
                END IF;
            END IF;
            RETURN known;
        END
        $$;

        INSERT INTO pgws.schema_version (version) SELECT 0 WHERE NOT EXISTS (SELECT FROM pgws.schema_version);
        UPDATE pgws.schema_version SET version = \(version);

        """

    /// The body of `pgws.store` and `pgws.publish` (function `name`), which differ only in
    /// what they do for a channel that is not durable.
    private static func storeBody(name: String, whenNotDurable: String) -> String {
        """
        DECLARE
            signal text;
            assigned bigint;
        BEGIN
            SELECT c.signal INTO signal FROM pgws.channels AS c WHERE c.name = \(name).channel;
            IF signal IS NULL THEN
                \(whenNotDurable)
            END IF;
            IF \(name).payload IS NULL THEN
                RAISE EXCEPTION 'pgws.publish: the payload is NULL' USING ERRCODE = '22004';
            END IF;
            IF octet_length(\(name).payload) > 1048576 THEN
                RAISE EXCEPTION 'pgws.publish: a payload of % bytes exceeds 1 MiB', octet_length(\(name).payload)
                    USING ERRCODE = '54000';
            END IF;
            -- Held to the end of the transaction: the next publisher of this channel numbers
            -- its message after this one, and commits after it.
            PERFORM pg_advisory_xact_lock(\(publishLockSpace), hashtext(\(name).channel));
            SELECT coalesce(max(m."offset"), 0) + 1 INTO assigned
            FROM pgws.messages AS m WHERE m.channel = \(name).channel;
            INSERT INTO pgws.messages (channel, "offset", payload) VALUES (\(name).channel, assigned, \(name).payload);
            IF octet_length(\(name).payload) <= \(maxSignalledPayload) THEN
                PERFORM pg_notify(signal, assigned || ':' || \(name).payload);
            ELSE
                PERFORM pg_notify(signal, assigned::text);
            END IF;
            RETURN assigned;
        END
        """
    }

    /// Why the schema could not be made ready.
    struct Failure: Error {
        /// Retrying cannot help (a version mismatch): the server must not start.
        let isFatal: Bool
        let message: String
    }

    /// Installs or upgrades the schema (`on`) or checks its version (`check`), on a fresh
    /// connection before the listener uses it. Several servers may start at once: the
    /// install runs in one transaction under an advisory lock, and skips what is done.
    static func prepare(_ conn: PGConnection, mode: Mode) -> Result<Void, Failure> {
        switch mode {
        case .off:
            return .success(())
        case .check:
            return installedVersion(conn).flatMap { installed in
                guard let installed else {
                    return .failure(
                        Failure(
                            isFatal: true,
                            message:
                                "durable = check, but the database has no pgws schema (this server needs version \(version)); "
                                + "apply `postgres-websockets --print-schema` or set durable = on"))
                }
                guard installed == version else {
                    return .failure(
                        Failure(
                            isFatal: true,
                            message:
                                "the database has pgws schema version \(installed), this server needs version \(version)"
                        ))
                }
                return .success(())
            }
        case .on:
            return install(conn)
        }
    }

    private static func install(_ conn: PGConnection) -> Result<Void, Failure> {
        func run(_ sql: String) -> Result<[[String?]], Failure> {
            conn.execute(sql).mapError { Failure(isFatal: false, message: "installing the pgws schema: \($0)") }
        }
        let outcome = run("BEGIN").flatMap { _ in run("SELECT pg_advisory_xact_lock(\(installLock))") }
            .flatMap { _ in
                installedVersion(conn).flatMap { installed -> Result<Void, Failure> in
                    if let installed, installed > version {
                        return .failure(
                            Failure(
                                isFatal: true,
                                message:
                                    "the database has pgws schema version \(installed), newer than this server's \(version)"
                            ))
                    }
                    if installed == version { return .success(()) }
                    return run(script).map { _ in () }
                }
            }
            .flatMap { _ in run("COMMIT").map { _ in () } }
        if case .failure = outcome { _ = conn.execute("ROLLBACK") }
        return outcome
    }

    /// The installed version, nil when there is no schema.
    private static func installedVersion(_ conn: PGConnection) -> Result<Int?, Failure> {
        func run(_ sql: String) -> Result<String?, Failure> {
            conn.execute(sql)
                .mapError { Failure(isFatal: false, message: "reading the pgws schema version: \($0)") }
                .map { rows in rows.first?.first ?? nil }
        }
        return run("SELECT to_regclass('pgws.schema_version')::text").flatMap { table in
            guard table != nil else { return .success(nil) }
            return run("SELECT max(version) FROM pgws.schema_version").map { $0.flatMap { Int($0) } }
        }
    }
}
