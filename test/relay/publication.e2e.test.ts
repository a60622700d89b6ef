// The relay process and its publication: one that hides outbox inserts stops it with exit 78 and
// the SQL that fixes it; a broader one (all tables), even made before the outbox, is fine.
import { outboxMigrations } from '@sluice/outbox';
import { createDatabase, migrate } from '@sluice/database';
import { testServers } from '@sluice/testkit';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import {
  awaitAllDelivered,
  checkDelivery,
  exitCodeWithin,
  loggedError,
  outboxIndex,
  topicSize,
  writeOutboxEvents,
  useRelayFixture,
} from './harness.js';

const { kafkaBrokers } = testServers();
const FIX = 'then start the relay again: ';

async function slotExists(pool: pg.Pool, slot: string): Promise<boolean> {
  const { rowCount } = await pool.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [
    slot,
  ]);
  return rowCount === 1;
}

describe('relay publication', () => {
  it('exits 78 with publication_mismatch for a publication whose row filter hides the outbox, and relays once fixed as told', async () => {
    const { fixture, start } = await useRelayFixture('relay_pub_filter');
    const publication = pg.escapeIdentifier(fixture.publication);
    await fixture.pool.query(
      `CREATE PUBLICATION ${publication} FOR TABLE shop.outbox WHERE (false) WITH (publish = 'insert')`,
    );
    await writeOutboxEvents(fixture.pool, { aggregates: 10, perAggregate: 1 });

    const refused = start();
    const code = await exitCodeWithin(refused, 30_000);
    const message = loggedError(refused, 'publication_mismatch');
    expect(message, refused.output()).toBeDefined();
    expect(message).toContain(`Publication "${fixture.publication}"`);
    expect(message).toContain('filters the rows of "shop"."outbox" (WHERE false)');
    expect(code).toBe(78);
    expect(await slotExists(fixture.pool, fixture.slot)).toBe(false);
    expect(await topicSize(kafkaBrokers, fixture.topic)).toBe(0);

    const fix = message?.slice(message.indexOf(FIX) + FIX.length) ?? '';
    expect(fix).toMatch(/^(BEGIN; )?ALTER PUBLICATION /);
    await fixture.pool.query(fix);
    const relay = start();
    await relay.waitForOutput('"published":10,"msg":"initial snapshot published"', {
      timeoutMs: 30_000,
      message: 'the initial snapshot',
    });
    await writeOutboxEvents(fixture.pool, { aggregates: 10, perAggregate: 1 });
    const outbox = await outboxIndex(fixture.pool);
    const records = await awaitAllDelivered(kafkaBrokers, fixture, outbox, 30_000);
    expect(checkDelivery(outbox, records)).toEqual({
      duplicates: 0,
      missing: [],
      unexpected: [],
      orderViolations: [],
    });
    relay.kill('SIGTERM');
    expect(await exitCodeWithin(relay, 35_000)).toBe(0);
  });

  it('waits for the outbox under a FOR ALL TABLES publication made before it, then relays only the outbox', async () => {
    const { fixture, start } = await useRelayFixture('relay_pub_all', { migrate: false });
    await fixture.pool.query(
      `CREATE PUBLICATION ${pg.escapeIdentifier(fixture.publication)} FOR ALL TABLES`,
    );
    const relay = start();
    await relay.waitForOutput('"code":"outbox_missing"', {
      timeoutMs: 30_000,
      message: 'the relay to wait for the outbox',
    });
    expect(relay.output()).toContain('"msg":"relay failed; retrying"');
    expect(await slotExists(fixture.pool, fixture.slot)).toBe(false);

    const db = createDatabase<Record<string, never>>({
      url: fixture.database.url,
      maxConnections: 1,
    });
    await migrate(db, 'outbox_migrations', outboxMigrations({ schema: 'shop' }));
    await db.destroy();
    // Other tables' changes travel the stream too; the relay publishes the outbox's alone.
    await fixture.pool.query('CREATE TABLE public.other (id int PRIMARY KEY)');
    await fixture.pool.query('INSERT INTO public.other SELECT generate_series(1, 100)');
    await writeOutboxEvents(fixture.pool, { aggregates: 20, perAggregate: 2 });
    const outbox = await outboxIndex(fixture.pool);
    const records = await awaitAllDelivered(kafkaBrokers, fixture, outbox, 60_000);
    expect(checkDelivery(outbox, records)).toMatchObject({
      missing: [],
      unexpected: [],
      orderViolations: [],
    });
    expect(relay.child.exitCode).toBeNull();
    relay.kill('SIGTERM');
    expect(await exitCodeWithin(relay, 35_000)).toBe(0);
  });
});
