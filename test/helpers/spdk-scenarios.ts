/**
 * Longhorn v2 histories built with the test blobstore writer: what Longhorn
 * does to a disk (create a replica head, write, snapshot with its xattrs,
 * delete a snapshot, revert, expand, back a replica by a backing image),
 * and the torn states a crash leaves.
 */
import { patternBytes } from './pattern';
import { MiB, SpdkDiskBuilder, u64 } from './spdk-builder';

export const VOL_A = 'pvc-aaaaaaaa-0000-4000-8000-000000000001';
export const REP_A = `${VOL_A}-r-1a2b3c4d`;
export const VOL_B = 'pvc-bbbbbbbb-0000-4000-8000-000000000002';
export const REP_B = `${VOL_B}-r-5e6f7a8b`;

let seed = 1;
/** Deterministic bytes (xorshift32 of a fresh seed). */
export function bytes(n: number): Buffer {
  return patternBytes({ kind: 'seed', seed: seed++ }, n);
}

export function snapXattrs(userCreated: boolean, ts: string): Record<string, string> {
  return { user_created: userCreated ? 'true' : 'false', snapshot_timestamp: ts };
}

/** A head with three snapshots in a line; writes inside, across and over clusters; zero data over a parent's data. */
export function chainScenario(b: SpdkDiskBuilder): void {
  const h = b.create(REP_A, 16 * MiB);
  b.write(h, 0, bytes(3 * MiB));
  b.write(h, 5 * MiB + 4096, bytes(8192));
  b.snapshot(h, `${REP_A}-snap-s1`, snapXattrs(false, '2026-08-20T09:00:00Z'));
  b.write(h, MiB - 512, bytes(1024)); // across two clusters
  b.write(h, 9 * MiB, bytes(MiB));
  b.snapshot(h, `${REP_A}-snap-s2`, snapXattrs(true, '2026-08-20T10:00:00Z'));
  b.write(h, 0, Buffer.alloc(4096)); // written zeros over s1's data
  b.write(h, 15 * MiB + 100, bytes(512));
  b.snapshot(h, `${REP_A}-snap-s3`, snapXattrs(false, '2026-08-20T11:00:00Z'));
  b.write(h, 2 * MiB + 4096, bytes(4096));
}

/** chainScenario, then s2 (the middle one) deleted: its clusters move into s3, s3 relinked to s1. */
export function deletedMiddleScenario(b: SpdkDiskBuilder): void {
  chainScenario(b);
  b.delete(b.byName(`${REP_A}-snap-s2`).id);
}

/**
 * Longhorn's revert: the head is deleted and recreated, with the same name,
 * as a clone of an older snapshot (s1); s2 and s3 stay, now off the chain.
 */
export function revertScenario(b: SpdkDiskBuilder): void {
  chainScenario(b);
  b.delete(b.byName(REP_A).id);
  const h = b.clone(b.byName(`${REP_A}-snap-s1`).id, REP_A);
  b.write(h, 4 * MiB, bytes(4096));
}

/** A head snapshotted at 4 MiB, then expanded to 10 MiB and written past the old end. */
export function expansionScenario(b: SpdkDiskBuilder): void {
  const h = b.create(REP_A, 4 * MiB);
  b.write(h, 0, bytes(4 * MiB));
  b.snapshot(h, `${REP_A}-snap-small`, snapXattrs(false, '2026-08-20T09:00:00Z'));
  b.resize(h, 10 * MiB);
  b.write(h, 7 * MiB, bytes(4096));
  b.write(h, MiB, bytes(100));
}

/** Two volumes whose writes alternate, so that their clusters interleave on the device; B on a backing image. */
export function twoVolumesScenario(b: SpdkDiskBuilder): void {
  const biTemp = b.create(`bi-base-disk-${b.lvsUuid}-temp-head`, 4 * MiB);
  b.write(biTemp, 0, bytes(3 * MiB));
  const bi = b.snapshot(biTemp, `bi-base-disk-${b.lvsUuid}`, { longhorn_backing_image_checksum: 'abc', longhorn_backing_image_uuid: '1234abcd', longhorn_backing_image_prepare_state: 'ready' });
  b.delete(biTemp);
  const a = b.create(REP_A, 8 * MiB);
  const hb = b.clone(bi, REP_B);
  b.resize(hb, 8 * MiB);
  for (let i = 0; i < 6; i++) {
    b.write(a, i * MiB + 10, bytes(5000));
    b.write(hb, (7 - i) * MiB + 20, bytes(3000));
  }
  b.snapshot(a, `${REP_A}-snap-a1`, snapXattrs(false, '2026-08-20T09:00:00Z'));
  b.snapshot(hb, `${REP_B}-snap-b1`, snapXattrs(true, '2026-08-20T09:00:00Z'));
  b.write(a, 2 * MiB, bytes(MiB));
  b.write(hb, 0, bytes(4096));
}

/**
 * Two snapshots cut off by a crash (build with clean: false): `torn-early`
 * exists with SNAPTMP but the head does not point to it yet (SPDK deletes
 * it); `torn-late` already is the head's parent, still with SNAPTMP (SPDK
 * keeps it). Also a transient `-rebuilding` lvol.
 */
export function tornScenario(b: SpdkDiskBuilder): void {
  const h = b.create(REP_A, 4 * MiB);
  b.write(h, 0, bytes(2 * MiB));
  const late = b.snapshot(h, `${REP_A}-snap-torn-late`, snapXattrs(false, '2026-08-20T09:00:00Z'));
  b.setInternal(late, 'SNAPTMP', u64(h));
  b.write(h, MiB, bytes(4096));
  const early = b.create(`${REP_A}-snap-torn-early`, 4 * MiB);
  b.setInternal(early, 'SNAPTMP', u64(h));
  b.create(`${REP_A}-rebuilding`, 4 * MiB);
}
