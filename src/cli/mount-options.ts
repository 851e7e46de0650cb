/**
 * `mount -o opt[,opt]`, as sshfs and guestmount take it: allow_other, ro
 * (every chainfs mount is read-only: accepted, changes nothing),
 * cache_mb=N, debug. Checked while commander parses, so a wrong option is a
 * usage error (exit 2; through the ready pipe for a background daemon),
 * never silently ignored.
 */
import { InvalidArgumentError } from 'commander';

/** The long options the -o options set. */
export interface DashOOptions {
  cacheMb: number;
  allowOther?: boolean;
  debug?: boolean;
  /** The -o options as given, checked. */
  options?: string[];
}

/** The -o options chainfs takes, as sshfs and guestmount spell them. */
export const O_OPTIONS = 'allow_other, ro (always: a no-op), cache_mb=N, debug';

/** The largest --cache-mb / cache_mb: 1 TiB, more memory than any view's runs or blocks could use. */
export const MAX_CACHE_MB = 1 << 20;

/** A --cache-mb or cache_mb value: a whole number of MiB from 1 to MAX_CACHE_MB, else a usage error naming `what`. */
export function cacheMbValue(what: string, v: string): number {
  const n = Number(v);
  if (Number.isInteger(n) && n > 0 && n <= MAX_CACHE_MB) return n;
  throw new InvalidArgumentError(`${what}must be a positive integer (MiB) up to ${MAX_CACHE_MB} (1 TiB), got ${JSON.stringify(v)}`);
}

/** One -o option, split: `cache_mb=64` -> ['cache_mb', '64']. */
function splitOption(o: string): [string, string | undefined] {
  const eq = o.indexOf('=');
  return eq < 0 ? [o, undefined] : [o.slice(0, eq), o.slice(eq + 1)];
}

/**
 * commander's parser of `-o opt[,opt]` (repeatable): checks every option,
 * so that a wrong one is a usage error (exit 2) naming what is accepted,
 * never an option silently ignored, and collects them.
 */
export function collectMountOptions(value: string, previous: string[] = []): string[] {
  const opts = value.split(',').map((x) => x.trim()).filter(Boolean);
  for (const o of opts) {
    const [key, v] = splitOption(o);
    if ((key === 'allow_other' || key === 'ro' || key === 'debug') && v === undefined) continue;
    if (key === 'cache_mb' && v !== undefined) {
      cacheMbValue('cache_mb ', v);
      continue;
    }
    if (key === 'rw') throw new InvalidArgumentError('rw: chainfs mounts are read-only (the sources are never written)');
    throw new InvalidArgumentError(`${o} is not a chainfs mount option (chainfs takes ${O_OPTIONS})`);
  }
  return [...previous, ...opts];
}

/**
 * Applies the -o options to the long ones: allow_other, ro (every chainfs
 * mount is read-only: accepted, changes nothing), cache_mb=N, debug.
 */
export function applyMountOptions(opts: DashOOptions): void {
  for (const o of opts.options ?? []) {
    const [key, value] = splitOption(o);
    if (key === 'allow_other') opts.allowOther = true;
    else if (key === 'debug') opts.debug = true;
    else if (key === 'cache_mb') opts.cacheMb = Number(value);
  }
}
