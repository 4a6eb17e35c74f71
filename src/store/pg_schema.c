#include "store/pg_schema.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"

/* ---- the migrations: never edit one that has shipped; add the next ---- */

/* 1: users, sessions, conversations, members, messages, and the domain's
 * write rules as functions (one round trip per operation).
 *
 * Ordering across nodes: a send locks its conversation's row (SELECT ...
 * FOR UPDATE) before it reads last_seq, so seqs are gapless and in commit
 * order however many nodes write the conversation; a cmid is unique per
 * (conversation, sender) by an index. Inbox changes: every change stamps
 * the row with its transaction id (pg_current_xact_id()); a reader's
 * cursor is the xmin of its snapshot, below which every transaction has
 * ended, so a change that commits after the read has an id >= the cursor
 * and is listed by changed_since = cursor (a change may be listed twice,
 * never missed). Errors of the domain come back as text codes (the C
 * side maps them), never as SQL errors, so one refused op does not abort
 * the batch's transaction. */
static const char m1[] =
    "create table users ("
    "  id bigint generated always as identity primary key,"
    "  name text not null unique,"
    "  pwhash text not null,"
    "  created bigint not null,"
    "  last_seen bigint not null default 0,"
    "  next_device integer not null default 1);"
    "create table sessions ("
    "  token_hash bytea primary key,"
    "  uid bigint not null references users (id),"
    "  device integer not null,"
    "  expires bigint not null);"
    "create index sessions_by_user on sessions (uid);"
    "create table convs ("
    "  id bigint generated always as identity primary key,"
    "  type smallint not null," /* 1 direct, 2 group */
    "  name text not null default '',"
    "  last_seq bigint not null default 0,"
    "  last_ts bigint not null,"
    "  created bigint not null,"
    "  nmembers integer not null default 0,"
    "  members_version bigint not null default 1,"
    "  version xid8 not null default pg_current_xact_id());"
    "create table directs ("
    "  lo bigint not null, hi bigint not null,"
    "  conv bigint not null references convs (id),"
    "  primary key (lo, hi));"
    "create table members ("
    "  conv bigint not null references convs (id),"
    "  uid bigint not null references users (id),"
    "  role smallint not null default 0," /* 1 admin */
    "  delivered_seq bigint not null default 0,"
    "  read_seq bigint not null default 0,"
    "  invited boolean not null default false,"
    "  version xid8 not null default pg_current_xact_id(),"
    "  primary key (conv, uid));"
    "create index members_by_user on members (uid, conv);"
    "create table messages ("
    "  conv bigint not null references convs (id),"
    "  seq bigint not null,"
    "  sender bigint not null,"
    "  ts bigint not null,"
    "  cmid text not null,"
    "  body text not null,"
    "  primary key (conv, seq));"
    "create unique index messages_by_cmid on messages (conv, sender, cmid);"
    /* inbox cursors are xmin + base: parleyd migrate sets base above the
     * embedded store's clock, so every cursor a client kept from before
     * lists everything once (listed twice, never missed) */
    "create table parley_cursor_base (base bigint not null);"
    "insert into parley_cursor_base values (0);"

    /* uid holds p_cap memberships of that kind (accepted, or invitations) */
    "create function parley_capped(p_uid bigint, p_invited boolean, p_cap integer)"
    " returns boolean language sql stable as $$"
    "  select count(*) >= p_cap from (select 1 from members"
    "   where uid = p_uid and invited = p_invited limit p_cap) t $$;"
    /* a contact of actor: has accepted a direct conversation with actor */
    "create function parley_is_contact(p_actor bigint, p_uid bigint)"
    " returns boolean language sql stable as $$"
    "  select exists (select 1 from directs d join members m on m.conv = d.conv and m.uid = p_uid"
    "   where d.lo = least(p_actor, p_uid) and d.hi = greatest(p_actor, p_uid)"
    "   and not m.invited) $$;"

    "create function parley_register(p_name text, p_pwhash text, p_now bigint, p_token bytea,"
    "  p_expires bigint, out rc text, out user_id bigint) language plpgsql as $$ begin"
    "  insert into users (name, pwhash, created, next_device) values (p_name, p_pwhash, p_now, 2)"
    "   on conflict (name) do nothing returning id into user_id;"
    "  if user_id is null then rc := 'username_taken'; return; end if;"
    "  insert into sessions values (p_token, user_id, 1, p_expires);"
    "  rc := 'ok'; end $$;"

    "create function parley_login(p_uid bigint, p_token bytea, p_expires bigint,"
    "  out rc text, out dev integer) language plpgsql as $$ begin"
    "  update users set next_device = next_device + 1 where id = p_uid"
    "   returning next_device - 1 into dev;"
    "  if dev is null then rc := 'not_found'; return; end if;"
    "  insert into sessions values (p_token, p_uid, dev, p_expires);"
    "  rc := 'ok'; end $$;"

    /* Opening the direct conversation someone started with you accepts it;
     * a new one invites the other (b). */
    "create function parley_direct(p_a bigint, p_b bigint, p_now bigint, p_cap integer,"
    "  out rc text, out conv_id bigint, out dup boolean) language plpgsql as $$"
    " declare inv boolean; begin"
    "  dup := false;"
    "  perform pg_advisory_xact_lock(hashtextextended(least(p_a, p_b) || ':' ||"
    "   greatest(p_a, p_b), 1));"
    "  select d.conv into conv_id from directs d"
    "   where d.lo = least(p_a, p_b) and d.hi = greatest(p_a, p_b);"
    "  if conv_id is not null then"
    "   dup := true;"
    "   select m.invited into inv from members m where m.conv = conv_id and m.uid = p_a for update;"
    "   if inv then"
    "    if parley_capped(p_a, false, p_cap) then rc := 'too_many_members'; return; end if;"
    "    update members set invited = false, version = pg_current_xact_id()"
    "     where conv = conv_id and uid = p_a;"
    "   end if;"
    "   rc := 'ok'; return;"
    "  end if;"
    "  if not exists (select 1 from users where id = p_b) then"
    "   rc := 'user_not_found'; return; end if;"
    "  if parley_capped(p_a, false, p_cap) or parley_capped(p_b, true, p_cap) then"
    "   rc := 'too_many_members'; return; end if;"
    "  insert into convs (type, last_ts, created, nmembers) values (1, p_now, p_now, 2)"
    "   returning id into conv_id;"
    "  insert into members (conv, uid, invited) values (conv_id, p_a, false), (conv_id, p_b, true);"
    "  insert into directs values (least(p_a, p_b), greatest(p_a, p_b), conv_id);"
    "  rc := 'ok'; end $$;"

    "create function parley_group(p_actor bigint, p_name text, p_uids bigint[], p_now bigint,"
    "  p_cap integer, out rc text, out conv_id bigint) language plpgsql as $$"
    " declare u bigint; begin"
    "  if parley_capped(p_actor, false, p_cap) then rc := 'too_many_members'; return; end if;"
    "  foreach u in array p_uids loop"
    "   if not exists (select 1 from users where id = u) then"
    "    rc := 'user_not_found'; return; end if;"
    "   if u <> p_actor and parley_capped(u, not parley_is_contact(p_actor, u), p_cap) then"
    "    rc := 'too_many_members'; return; end if;"
    "  end loop;"
    "  insert into convs (type, name, last_ts, created) values (2, p_name, p_now, p_now)"
    "   returning id into conv_id;"
    "  insert into members (conv, uid, role) values (conv_id, p_actor, 1);"
    "  insert into members (conv, uid, invited)"
    "   select conv_id, x, not parley_is_contact(p_actor, x)"
    "   from (select distinct x from unnest(p_uids) x where x <> p_actor) t;"
    "  update convs set nmembers = (select count(*) from members where conv = conv_id)"
    "   where id = conv_id;"
    "  rc := 'ok'; end $$;"

    /* A membership change: the actor must be a member (forbidden), the
     * conversation a group (invalid), the actor an admin when p_admin. */
    "create function parley_check_actor(p_actor bigint, p_conv bigint, p_admin boolean)"
    " returns text language plpgsql as $$ declare t smallint; r smallint; begin"
    "  select type into t from convs where id = p_conv for update;"
    "  if not found then return 'forbidden'; end if;"
    "  select role into r from members where conv = p_conv and uid = p_actor;"
    "  if not found then return 'forbidden'; end if;"
    "  if t <> 2 then return 'invalid'; end if;"
    "  if p_admin and r <> 1 then return 'forbidden'; end if;"
    "  return 'ok'; end $$;"

    "create function parley_add(p_actor bigint, p_conv bigint, p_target bigint,"
    "  p_max_members integer, p_cap integer) returns text language plpgsql as $$"
    " declare rc text; inv boolean; begin"
    "  rc := parley_check_actor(p_actor, p_conv, true);"
    "  if rc <> 'ok' then return rc; end if;"
    "  if (select nmembers from convs where id = p_conv) >= p_max_members then"
    "   return 'too_many_members'; end if;"
    "  if exists (select 1 from members where conv = p_conv and uid = p_target) then"
    "   return 'already_member'; end if;"
    "  if not exists (select 1 from users where id = p_target) then return 'user_not_found'; end if;"
    "  inv := not parley_is_contact(p_actor, p_target);"
    "  if parley_capped(p_target, inv, p_cap) then return 'too_many_members'; end if;"
    "  insert into members (conv, uid, invited) values (p_conv, p_target, inv);"
    "  update convs set nmembers = nmembers + 1, members_version = members_version + 1,"
    "   version = pg_current_xact_id() where id = p_conv;"
    "  return 'ok'; end $$;"

    /* A group never ends without an admin: when the last one goes, the
     * member with the lowest uid becomes one. */
    "create function parley_keep_an_admin(p_conv bigint) returns void language sql as $$"
    "  update members set role = 1, version = pg_current_xact_id()"
    "   where conv = p_conv and not exists (select 1 from members where conv = p_conv and role = 1)"
    "   and uid = (select min(uid) from members where conv = p_conv) $$;"

    "create function parley_remove(p_actor bigint, p_conv bigint, p_target bigint)"
    " returns text language plpgsql as $$ declare rc text; begin"
    "  rc := parley_check_actor(p_actor, p_conv, p_target <> p_actor);"
    "  if rc <> 'ok' then return rc; end if;"
    "  delete from members where conv = p_conv and uid = p_target;"
    "  if not found then return 'not_member'; end if;"
    "  perform parley_keep_an_admin(p_conv);"
    "  update convs set nmembers = nmembers - 1, members_version = members_version + 1,"
    "   version = pg_current_xact_id() where id = p_conv;"
    "  return 'ok'; end $$;"

    /* Each group left, or why not: forbidden (not a member), invalid (a
     * direct conversation is for good). */
    "create function parley_leave(p_actor bigint, p_convs bigint[]) returns text[]"
    " language plpgsql as $$ declare c bigint; t smallint; res text[] := '{}'; begin"
    "  foreach c in array p_convs loop"
    "   select type into t from convs where id = c for update;"
    "   if not found or not exists (select 1 from members where conv = c and uid = p_actor) then"
    "    res := res || 'forbidden'::text; continue; end if;"
    "   if t <> 2 then res := res || 'invalid'::text; continue; end if;"
    "   delete from members where conv = c and uid = p_actor;"
    "   perform parley_keep_an_admin(c);"
    "   update convs set nmembers = nmembers - 1, members_version = members_version + 1,"
    "    version = pg_current_xact_id() where id = c;"
    "   res := res || 'ok'::text;"
    "  end loop;"
    "  return res; end $$;"

    /* A send: the conversation's row lock orders it; a resend of a cmid
     * (same body, byte for byte) answers the original; replying accepts an
     * invitation; the sender has read what it sent. */
    "create function parley_send(p_conv bigint, p_uid bigint, p_cmid text, p_body text,"
    "  p_now bigint, p_cap integer, out rc text, out seq_out bigint, out ts_out bigint,"
    "  out dup boolean, out mv bigint) language plpgsql as $$"
    " declare c convs; me members; old messages; begin"
    "  dup := false;"
    "  select * into c from convs where id = p_conv for update;"
    "  if not found then rc := 'forbidden'; return; end if;"
    "  select * into me from members where conv = p_conv and uid = p_uid;"
    "  if not found then rc := 'forbidden'; return; end if;"
    "  mv := c.members_version;"
    "  select * into old from messages where conv = p_conv and sender = p_uid and cmid = p_cmid;"
    "  if found then"
    "   if old.body <> p_body then rc := 'cmid_reused'; return; end if;"
    "   dup := true; seq_out := old.seq; ts_out := old.ts; rc := 'ok'; return;"
    "  end if;"
    "  if me.invited and parley_capped(p_uid, false, p_cap) then"
    "   rc := 'too_many_members'; return; end if;"
    "  seq_out := c.last_seq + 1;"
    "  ts_out := greatest(p_now, c.last_ts);"
    "  insert into messages values (p_conv, seq_out, p_uid, ts_out, p_cmid, p_body);"
    "  update convs set last_seq = seq_out, last_ts = ts_out, version = pg_current_xact_id()"
    "   where id = p_conv;"
    "  update members set delivered_seq = seq_out, read_seq = seq_out, invited = false,"
    "   version = pg_current_xact_id() where conv = p_conv and uid = p_uid;"
    "  rc := 'ok'; end $$;"

    /* Cursors only move forward, never past last_seq (invalid); a read
     * may accept an invitation. */
    "create function parley_cursor(p_conv bigint, p_uid bigint, p_delivered bigint,"
    "  p_read bigint, p_accept boolean, p_cap integer, out rc text, out changed boolean,"
    "  out dl_out bigint, out rd_out bigint, out mv bigint) language plpgsql as $$"
    " declare c convs; me members; dl bigint; acc boolean; begin"
    "  changed := false;"
    "  select * into c from convs where id = p_conv;"
    "  if not found then rc := 'forbidden'; return; end if;"
    "  select * into me from members where conv = p_conv and uid = p_uid for update;"
    "  if not found then rc := 'forbidden'; return; end if;"
    "  mv := c.members_version;"
    "  if p_read > c.last_seq or p_delivered > c.last_seq then rc := 'invalid'; return; end if;"
    "  dl := greatest(p_delivered, p_read);"
    "  acc := p_accept and me.invited;"
    "  if acc and parley_capped(p_uid, false, p_cap) then rc := 'too_many_members'; return; end if;"
    "  changed := dl > me.delivered_seq or p_read > me.read_seq;"
    "  dl_out := greatest(dl, me.delivered_seq);"
    "  rd_out := greatest(p_read, me.read_seq);"
    "  if changed or acc then"
    "   update members set delivered_seq = dl_out, read_seq = rd_out,"
    "    invited = invited and not acc, version = pg_current_xact_id()"
    "    where conv = p_conv and uid = p_uid;"
    "  end if;"
    "  rc := 'ok'; end $$;";

static const char *const migrations[] = {m1};
#define NMIGRATIONS (int)(sizeof migrations / sizeof migrations[0])

int pg_schema_version(void) { return NMIGRATIONS; }

static bool run(PGconn *c, const char *sql, char *err, size_t cap)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) snprintf(err, cap, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return ok;
}

int pg_schema_migrate(PGconn *c, int *found, char *err, size_t cap)
{
    *found = 0;
    err[0] = 0;
    /* one node migrates at a time: the others wait here, then find it done */
    if (!run(c, "begin", err, cap)) return ERR_IO;
    if (!run(c, "select pg_advisory_xact_lock(7365232115)", err, cap) ||
        !run(c, "create table if not exists parley_schema (version integer not null)", err, cap))
        goto fail;
    PGresult *r = PQexec(c, "select coalesce(max(version), 0) from parley_schema");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, cap, "%s", PQresultErrorMessage(r));
        PQclear(r);
        goto fail;
    }
    int v = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    *found = v;
    if (v > NMIGRATIONS) {
        run(c, "rollback", err, cap);
        snprintf(err, cap, "the database has schema version %d; this parleyd knows up to %d", v,
                 NMIGRATIONS);
        return ERR_VERSION;
    }
    for (int i = v; i < NMIGRATIONS; i++)
        if (!run(c, migrations[i], err, cap)) goto fail;
    char sql[96];
    snprintf(sql, sizeof sql, "delete from parley_schema; insert into parley_schema values (%d)",
             NMIGRATIONS);
    if (!run(c, sql, err, cap) || !run(c, "commit", err, cap)) goto fail;
    return ERR_OK;
fail:;
    char keep[512];
    snprintf(keep, sizeof keep, "%s", err);
    run(c, "rollback", err, cap);
    snprintf(err, cap, "%s", keep);
    return ERR_IO;
}
