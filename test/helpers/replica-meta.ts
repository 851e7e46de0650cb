/**
 * The replica's JSON files, byte for byte as the engine's Go code writes
 * them: json.NewEncoder(f).Encode(struct) — compact, fields in struct order,
 * map keys sorted, HTML characters escaped, one trailing "\n" — written to
 * `<file>.tmp` and renamed into place.
 */
import * as fs from 'node:fs';

/** pkg/replica `disk`: the content of `<layer>.img.meta`. */
export interface DiskMeta {
  Name: string;
  Parent: string;
  Removed: boolean;
  UserCreated: boolean;
  Created: string;
  Labels: Record<string, string> | null;
}

/** pkg/replica `Info` as v1.4.4 writes it (no `Encrypted`: that field arrived in v1.12). */
export interface VolumeMeta {
  Size: number;
  Head: string;
  Dirty: boolean;
  Rebuilding: boolean;
  Error: string;
  Parent: string;
  SectorSize: number;
  BackingFilePath: string;
}

export function encodeDiskMeta(d: DiskMeta): string {
  return (
    `{"Name":${goString(d.Name)},"Parent":${goString(d.Parent)},"Removed":${d.Removed},` +
    `"UserCreated":${d.UserCreated},"Created":${goString(d.Created)},"Labels":${goStringMap(d.Labels)}}\n`
  );
}

export function encodeVolumeMeta(v: VolumeMeta): string {
  return (
    `{"Size":${goInt(v.Size)},"Head":${goString(v.Head)},"Dirty":${v.Dirty},"Rebuilding":${v.Rebuilding},` +
    `"Error":${goString(v.Error)},"Parent":${goString(v.Parent)},"SectorSize":${goInt(v.SectorSize)},` +
    `"BackingFilePath":${goString(v.BackingFilePath)}}\n`
  );
}

/** The engine's encodeToFile: write `<file>.tmp`, then rename over `file`. */
export function writeMetaFile(file: string, content: string): void {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, content);
  fs.renameSync(tmp, file);
}

function goInt(n: number): string {
  if (!Number.isSafeInteger(n)) throw new Error(`${n} is not an int64 this helper can encode`);
  return String(n);
}

/**
 * A Go map[string]string: keys sorted by their UTF-8 bytes, `nil` as null.
 */
export function goStringMap(m: Record<string, string> | null): string {
  if (m === null) return 'null';
  const keys = Object.keys(m).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  return `{${keys.map((k) => `${goString(k)}:${goString(m[k] as string)}`).join(',')}}`;
}

/**
 * A Go string as encoding/json writes it with HTML escaping on (the
 * Encoder's default): <, > and & become \u003c \u003e \u0026, U+2028 and
 * U+2029 are escaped, and control characters other than \n \r \t use \u00XX
 * (Go before 1.22, which built v1.4.4, has no short \b or \f).
 */
export function goString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0) as number;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || ch === '<' || ch === '>' || ch === '&' || c === 0x2028 || c === 0x2029) {
      out += `\\u${c.toString(16).padStart(4, '0')}`;
    } else out += ch;
  }
  return `${out}"`;
}
