// Numbers as people read them: bytes in KiB/MiB/GiB, durations in ms/s/min/h, counts grouped.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
const count = new Intl.NumberFormat('en', { maximumFractionDigits: 1 });

/** `1536` → `1.5 KiB`; null → `—`. */
export function bytes(value: number | null | undefined): string {
  if (value === null || value === undefined) return '—';
  let size = value;
  let unit = 0;
  while (Math.abs(size) >= 1024 && unit < UNITS.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return `${count.format(size)} ${UNITS[unit] ?? 'B'}`;
}

/** Milliseconds: `850` → `850 ms`, `61_000` → `1 min 1 s`; null → `—`. */
export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '—';
  if (Math.abs(ms) < 1000) return `${count.format(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${count.format(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** Seconds, as `duration` shows them. */
export function seconds(value: number | null | undefined): string {
  return value === null || value === undefined ? '—' : duration(value * 1000);
}

/** A count or rate: `12345.6` → `12,345.6`; null → `—`. */
export function num(value: number | null | undefined): string {
  return value === null || value === undefined ? '—' : count.format(value);
}

/** A value named `name` in the unit its name ends with (…Bytes, …Seconds, …Ms), else a count. */
export function measure(name: string, value: number): string {
  if (/bytes$/i.test(name)) return bytes(value);
  if (/seconds$/i.test(name)) return seconds(value);
  if (/ms$/i.test(name)) return duration(value);
  return num(value);
}

/** An RFC 3339 time in the reader's locale, to the second. */
export function time(value: string | null | undefined): string {
  if (value === null || value === undefined) return '—';
  return new Date(value).toLocaleString('en-GB', { hour12: false });
}
