import type { Generated } from 'kysely';

export interface CustomerTable {
  id: string;
  email: string | null;
  name: string | null;
  erased_at: Date | null;
  version: number;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}

export interface ProductTable {
  id: string;
  sku: string;
  name: string;
  price_cents: number;
  stock: number;
  delisted_at: Date | null;
  version: number;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}

export interface CartTable {
  id: string;
  customer_id: string;
  status: 'open' | 'checked_out';
  version: number;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}

export interface CartItemTable {
  cart_id: string;
  product_id: string;
  quantity: number;
  unit_price_cents: number;
}

export interface OrderTable {
  id: string;
  cart_id: string;
  customer_id: string;
  total_cents: number;
  status: 'placed';
  version: number;
  created_at: Generated<Date>;
}

export interface OrderLineTable {
  order_id: string;
  product_id: string;
  quantity: number;
  unit_price_cents: number;
}

export interface IdempotencyKeyTable {
  /** Who sent the request: the token's subject. */
  actor: string;
  key: string;
  /** HMAC-SHA256 of the request, keyed from the master key. */
  request_hash: string;
  /** The customer the stored response is about. */
  customer_id: string | null;
  status_code: number | null;
  response_headers: Record<string, string> | null;
  response_body: unknown;
  created_at: Generated<Date>;
}

export interface ShopDatabase {
  'shop.customers': CustomerTable;
  'shop.products': ProductTable;
  'shop.carts': CartTable;
  'shop.cart_items': CartItemTable;
  'shop.orders': OrderTable;
  'shop.order_lines': OrderLineTable;
  'sluice.idempotency_keys': IdempotencyKeyTable;
}
