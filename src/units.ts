/**
 * Bytes in `mib` MiB, exact for every value an option takes: `mib << 20`
 * wraps at 2048 (2048 << 20 is negative, 4096 << 20 is 0).
 */
export function mibToBytes(mib: number): number {
  return mib * 1048576;
}

/** Sizes for people (binary units): messages, tables, progress. `1536` -> `1.5 KiB`. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[u]}`;
}
