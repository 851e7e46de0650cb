/** Reading backup-target views from TypeScript (no CLI): open, select, read it all through readAsync, hash. */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openBackupstore } from '../../src/source/backupstore/index';
import type { BackupstoreCatalog } from '../../src/source/backupstore/catalog';
import type { SourceOptions, ViewSelector } from '../../src/source/catalog';

export const FIXTURE_DIR = path.resolve(__dirname, '..', 'fixtures', 'backupstore-v1.7.0');

export interface FixtureManifest {
  volume: string;
  backups: { name: string; status: string; sha256: string; restoredSize: number; compression: string; snapshot: string }[];
}

export function fixtureManifest(): FixtureManifest {
  return JSON.parse(fs.readFileSync(path.join(FIXTURE_DIR, 'manifest.json'), 'utf8')) as FixtureManifest;
}

/** Extracts the engine-written target into a fresh temp dir; returns the target directory. */
export function extractFixture(into?: string): string {
  const dir = into ?? fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-bs-gt-'));
  execFileSync('tar', ['xzf', path.join(FIXTURE_DIR, 'v170-lz4.tar.gz'), '-C', dir]);
  return dir;
}

/** The whole image of `view`, read in `chunk`-byte reads through chain.readAsync, as sha256 and bytes. */
export async function readView(cat: BackupstoreCatalog, viewPath: string, chunk = 1 << 20): Promise<{ sha256: string; data: Buffer }> {
  const view = cat.view(viewPath);
  if (!view) throw new Error(`no view ${viewPath}`);
  const opened = await view.open({});
  try {
    const size = opened.chain.size;
    const data = Buffer.alloc(size);
    for (let pos = 0; pos < size; pos += chunk) {
      await opened.chain.readAsync(data, pos, Math.min(chunk, size - pos), pos);
    }
    return { sha256: createHash('sha256').update(data).digest('hex'), data };
  } finally {
    opened.close();
  }
}

export async function open(target: string, opts: SourceOptions = {}): Promise<BackupstoreCatalog> {
  return openBackupstore([target], opts);
}

export async function readSelected(target: string, sel: ViewSelector, opts: SourceOptions = {}): Promise<string> {
  const cat = await open(target, opts);
  try {
    return (await readView(cat, cat.select(sel).path)).sha256;
  } finally {
    cat.close();
  }
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}
