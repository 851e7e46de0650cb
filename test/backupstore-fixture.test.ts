/**
 * The engine-written target (Longhorn engine v1.7.0's own backupstore code,
 * test/fixtures/backupstore-v1.7.0): every live backup read through the
 * catalog equals the manifest's sha256 of Longhorn's real restore.
 */
import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractFixture, fixtureManifest, open, readView, readSelected } from './helpers/backupstore-read';

let target: string;
const manifest = fixtureManifest();

beforeAll(() => {
  target = extractFixture();
});

afterAll(() => {
  fs.rmSync(target, { recursive: true, force: true });
});

describe('engine-written v1.7.0 lz4 target', () => {
  it('lists the volume, its three live backups, and no deleted one', async () => {
    const cat = await open(target);
    try {
      const paths = cat.views().map((v) => v.path).sort();
      expect(paths).toEqual(manifest.backups.filter((b) => b.status === 'live').map((b) => `volumes/vol-lz4/backups/${b.name}.img`).sort());
      for (const v of cat.views()) {
        expect(v.size).toBe(67108864);
        expect(v.problem).toBeUndefined();
      }
      const rep = cat.report() as { volumes: { name: string; compression: string; backups: { state: string }[] }[] };
      expect(rep.volumes[0].name).toBe('vol-lz4');
      expect(rep.volumes[0].compression).toBe('lz4');
      expect(cat.render()).toContain('backup-lz4-04-fullmode');
    } finally {
      cat.close();
    }
  });

  it('every live backup equals its manifest sha256 byte for byte', async () => {
    const cat = await open(target);
    try {
      for (const b of manifest.backups.filter((x) => x.status === 'live')) {
        const { sha256 } = await readView(cat, `volumes/vol-lz4/backups/${b.name}.img`, 192 << 10);
        expect(sha256, b.name).toBe(b.sha256);
      }
      // Shared blocks are fetched once: fewer fetches than listed blocks over the three backups.
      const fetched = cat.store.stats.fetched;
      expect(fetched).toBeLessThanOrEqual(fs.readdirSync(target, { recursive: true }).filter((f) => String(f).endsWith('.blk')).length);
    } finally {
      cat.close();
    }
  });

  it('a backup URL selects its backup; so do --volume/--backup', async () => {
    const b = manifest.backups.find((x) => x.name === 'backup-lz4-03')!;
    expect(await readSelected(`vfs://${target}?backup=backup-lz4-03&volume=vol-lz4`, {})).toBe(b.sha256);
    expect(await readSelected(target, { volume: 'vol-lz4', backup: 'backup-lz4-03' })).toBe(b.sha256);
    // A volume alone: its LastBackupName.
    const last = manifest.backups.find((x) => x.name === 'backup-lz4-04-fullmode')!;
    expect(await readSelected(target, { volume: 'vol-lz4' })).toBe(last.sha256);
    const cat = await open(target);
    try {
      expect(() => cat.select({ backup: 'backup-lz4-02' })).toThrow(/no backup named backup-lz4-02.*backup-lz4-01/);
      expect(() => cat.select({ snapshot: 's' })).toThrow(/--snapshot is not an option for a backup target/);
    } finally {
      cat.close();
    }
  });
});
