import { outboxMigrations } from '@sluice/outbox';
import { SUBJECT_KEYS_DDL } from '@sluice/privacy';
import { sql } from 'kysely';
import type { Migration } from 'kysely/migration';
import { randomBytes } from 'node:crypto';

/**
 * shop-api's schema: the write model in `shop`, the outbox beside it, idempotency keys, the
 * API's own secrets and the subject keys of personal data in `sluice`.
 */
export const shopMigrations: Record<string, Migration> = {
  ...outboxMigrations({ schema: 'shop' }),
  '0002_shop': {
    async up(db) {
      await sql`
        CREATE TABLE shop.customers (
          id uuid PRIMARY KEY,
          email text,
          name text,
          erased_at timestamptz,
          version integer NOT NULL,
          created_at timestamptz NOT NULL DEFAULT now(),
          updated_at timestamptz NOT NULL DEFAULT now()
        );
        -- Emails are unique regardless of case: enforced here, never by read-then-write.
        CREATE UNIQUE INDEX customers_email_lower ON shop.customers (lower(email));

        CREATE TABLE shop.products (
          id uuid PRIMARY KEY,
          sku text NOT NULL CONSTRAINT products_sku_key UNIQUE,
          name text NOT NULL,
          price_cents bigint NOT NULL CHECK (price_cents >= 0),
          stock integer NOT NULL CHECK (stock >= 0),
          delisted_at timestamptz,
          version integer NOT NULL,
          created_at timestamptz NOT NULL DEFAULT now(),
          updated_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE shop.carts (
          id uuid PRIMARY KEY,
          customer_id uuid NOT NULL REFERENCES shop.customers (id),
          status text NOT NULL CHECK (status IN ('open', 'checked_out')),
          version integer NOT NULL,
          created_at timestamptz NOT NULL DEFAULT now(),
          updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX carts_customer ON shop.carts (customer_id);

        CREATE TABLE shop.cart_items (
          cart_id uuid NOT NULL REFERENCES shop.carts (id),
          product_id uuid NOT NULL REFERENCES shop.products (id),
          quantity integer NOT NULL CHECK (quantity > 0),
          unit_price_cents bigint NOT NULL,
          PRIMARY KEY (cart_id, product_id)
        );

        CREATE TABLE shop.orders (
          id uuid PRIMARY KEY,
          cart_id uuid NOT NULL UNIQUE REFERENCES shop.carts (id),
          customer_id uuid NOT NULL REFERENCES shop.customers (id),
          total_cents bigint NOT NULL,
          status text NOT NULL,
          version integer NOT NULL,
          created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX orders_customer ON shop.orders (customer_id, id);

        CREATE TABLE shop.order_lines (
          order_id uuid NOT NULL REFERENCES shop.orders (id),
          product_id uuid NOT NULL REFERENCES shop.products (id),
          quantity integer NOT NULL,
          unit_price_cents bigint NOT NULL,
          PRIMARY KEY (order_id, product_id)
        );

        CREATE TABLE sluice.idempotency_keys (
          key text PRIMARY KEY,
          request_hash text NOT NULL,
          status_code integer,
          response_headers jsonb,
          response_body jsonb,
          created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX idempotency_keys_created_at ON sluice.idempotency_keys (created_at);
      `.execute(db);
    },
  },
  '0003_api_secrets': {
    async up(db) {
      await sql`
        CREATE TABLE sluice.api_secrets (
          name text PRIMARY KEY,
          secret bytea NOT NULL,
          created_at timestamptz NOT NULL DEFAULT now()
        )`.execute(db);
      // Made once, here, so every replica on this database signs and checks with the same key.
      await sql`INSERT INTO sluice.api_secrets (name, secret)
                VALUES ('consistency_token', ${randomBytes(32)})`.execute(db);
    },
  },
  '0004_subject_keys': {
    async up(db) {
      await sql.raw(SUBJECT_KEYS_DDL).execute(db);
    },
  },
  '0005_idempotency_per_actor': {
    async up(db) {
      // Keys belong to whoever sent them, and a request's hash is keyed (HMAC). Rows of the old
      // shape hold an unkeyed hash of their request, personal data included, and no sender: they
      // are deleted, not carried over. They are purged after IDEMPOTENCY_RETENTION_HOURS anyway;
      // a retry across this migration runs again as a new request.
      await sql`
        DELETE FROM sluice.idempotency_keys;
        ALTER TABLE sluice.idempotency_keys
          ADD COLUMN actor text NOT NULL,
          ADD COLUMN customer_id uuid,
          DROP CONSTRAINT idempotency_keys_pkey,
          ADD PRIMARY KEY (actor, key);
        CREATE INDEX idempotency_keys_customer ON sluice.idempotency_keys (customer_id)
          WHERE customer_id IS NOT NULL;
      `.execute(db);
    },
  },
};
