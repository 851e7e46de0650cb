/**
 * Reading v2 views for tests, straight through the catalog (as the commands
 * will): open the disks, take a view, read it whole through its Chain.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import type { CatalogView } from '../../src/source/catalog';

export async function readView(v: CatalogView): Promise<Buffer> {
  const o = await v.open({});
  const buf = Buffer.alloc(v.size);
  o.chain.read(buf, 0, v.size, 0);
  const again = Buffer.alloc(v.size);
  await o.chain.readAsync(again, 0, v.size, 0);
  if (!again.equals(buf)) throw new Error(`${v.path}: readAsync differs from read`);
  o.close();
  return buf;
}

export function sha256(b: Buffer): string {
  return crypto.createHash('sha256').update(b).digest('hex');
}

export const FIXTURES = path.resolve(__dirname, '..', 'fixtures', 'spdk-v25.05');
export const FIXTURE_NAMES = ['01-single-replica-chain', '02-backing-image'];

/** Decompresses fixture `name` into `dir` (sparse); returns the image path. */
export function unpackFixture(name: string, dir: string): string {
  const out = path.join(dir, `${name}.img`);
  execFileSync('sh', ['-c', `gzip -dc "$1" | cp --sparse=always /dev/stdin "$2"`, 'sh', path.join(FIXTURES, name, `${name}.img.gz`), out]);
  return out;
}

export function fileSha256(file: string): string {
  return sha256(fs.readFileSync(file));
}
