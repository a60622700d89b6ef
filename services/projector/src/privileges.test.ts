import { describe, expect, it } from 'vitest';
import { privilegeProblems, type PrivilegeFacts } from './privileges.js';

const fine: PrivilegeFacts = {
  role: 'sluice_projector',
  sluice_exists: true,
  uses_sluice: true,
  creates_in_sluice: false,
  unwritable: [],
  schemas: [{ schema: 'views', exists: true, usable: true }],
  creates_schemas: false,
  pending: [],
};

describe('privilegeProblems', () => {
  it('none for the role roles.sql makes, which creates no schema and applies no migration', () => {
    expect(privilegeProblems(fine)).toEqual([]);
  });

  it('one line per gap, each with the SQL that closes it', () => {
    const found = privilegeProblems({
      ...fine,
      unwritable: [
        { table: 'projection_checkpoints', privileges: 'SELECT, INSERT, UPDATE, DELETE' },
        { table: 'claim_checks', privileges: 'SELECT' },
      ],
      schemas: [
        { schema: 'views', exists: true, usable: false },
        { schema: 'reports', exists: false, usable: false },
      ],
      pending: ['0009_new'],
    });
    expect(found).toEqual([
      "Migrations 0009_new are not applied and role sluice_projector may not apply them (no CREATE on schema sluice): apply them as the schema owner first (sluice-projector with the owner's DATABASE_URL)",
      'Role sluice_projector may not write the projector\'s bookkeeping (sluice.projection_checkpoints, sluice.claim_checks): GRANT SELECT, INSERT, UPDATE, DELETE ON sluice.projection_checkpoints TO "sluice_projector"; GRANT SELECT ON sluice.claim_checks TO "sluice_projector";',
      'Role sluice_projector may not create the projections\' tables in schema views (it needs USAGE and CREATE, or to own it): ALTER SCHEMA "views" OWNER TO "sluice_projector";',
      'Schema reports of the projections\' tables does not exist and role sluice_projector may not create it: CREATE SCHEMA "reports" AUTHORIZATION "sluice_projector";',
    ]);
  });

  it('says only that schema sluice is out of reach when it is', () => {
    const found = privilegeProblems({ ...fine, uses_sluice: false, pending: ['0001_projector'] });
    expect(found).toHaveLength(1);
    expect(found[0]).toContain('may not use schema sluice');
  });

  it('lets a role that may create schemas make sluice at its first start, else says who must', () => {
    const fresh = {
      ...fine,
      sluice_exists: false,
      uses_sluice: false,
      pending: ['0001_projector'],
    };
    expect(privilegeProblems({ ...fresh, creates_schemas: true })).toEqual([]);
    expect(privilegeProblems(fresh)).toEqual([
      "Schema sluice does not exist and role sluice_projector may not create it: apply the projector's migrations as the schema owner first (sluice-projector with the owner's DATABASE_URL)",
    ]);
  });

  it('lets a role that may create in sluice apply pending migrations', () => {
    expect(privilegeProblems({ ...fine, creates_in_sluice: true, pending: ['0009_new'] })).toEqual(
      [],
    );
  });
});
