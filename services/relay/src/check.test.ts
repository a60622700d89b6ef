import { describe, expect, it } from 'vitest';
import { serverProblems, type ServerFacts } from './check.js';

const names = {
  publication: 'sluice_outbox',
  slot: 'sluice_relay',
  outbox: { schema: 'shop', table: 'outbox' },
};
const ready: ServerFacts = {
  wal_level: 'logical',
  role: 'sluice_relay',
  may_replicate: true,
  max_slots: 10,
  slots_used: 3,
  slot_exists: false,
  outbox_exists: true,
  may_read_outbox: true,
  publication_exists: false,
  may_create_publication: true,
  relay_tables_exist: false,
  may_use_relay_tables: true,
};
const where = 'db:5432/shop';

describe('serverProblems', () => {
  it('finds none on a server ready for the relay', () => {
    expect(serverProblems(ready, names, where)).toEqual([]);
  });

  it('names a wal_level other than logical and how to change it', () => {
    const [line, ...rest] = serverProblems({ ...ready, wal_level: 'replica' }, names, where);
    expect(rest).toEqual([]);
    expect(line).toContain('PostgreSQL at db:5432/shop has wal_level=replica');
    expect(line).toContain('needs wal_level=logical');
  });

  it('reports a full set of replication slots only when the slot is still to be created', () => {
    const full = { ...ready, max_slots: 4, slots_used: 4 };
    const [line, ...rest] = serverProblems(full, names, where);
    expect(rest).toEqual([]);
    expect(line).toContain('no free replication slot for sluice_relay');
    expect(line).toContain('max_replication_slots=4, 4 in use');
    expect(serverProblems({ ...full, slot_exists: true }, names, where)).toEqual([]);
    expect(serverProblems({ ...ready, max_slots: 0, slots_used: 0 }, names, where)).toHaveLength(1);
  });

  it('says what to grant a role that may neither replicate nor read the outbox', () => {
    const lines = serverProblems(
      { ...ready, may_replicate: false, may_read_outbox: false },
      names,
      where,
    );
    expect(lines).toEqual([
      expect.stringContaining('ALTER ROLE "sluice_relay" REPLICATION;'),
      expect.stringContaining(
        'GRANT USAGE ON SCHEMA shop TO "sluice_relay"; GRANT SELECT ON shop.outbox TO "sluice_relay";',
      ),
    ]);
  });

  it('says how to create a missing outbox, and nothing about reading it', () => {
    const lines = serverProblems(
      { ...ready, outbox_exists: false, may_read_outbox: false },
      names,
      where,
    );
    expect(lines).toEqual([expect.stringContaining("outboxMigrations({ schema: 'shop' })")]);
  });
});
