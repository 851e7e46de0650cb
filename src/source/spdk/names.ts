/**
 * What Longhorn's v2 engine means by an lvol's name.
 *
 * longhorn-spdk-engine `pkg/types/types.go`: a replica head is named after
 * the replica CR, `<volume>-r-<8 chars>` (l.260-263); its snapshots
 * `<replica>-snap-<snapshot>` (l.293-303); transient lvols
 * `<replica>-rebuilding`, `<replica>-expired-<8>`, `<replica>-cloning`,
 * `<replica>-cloning-tmp`, `<replica>-clone-ep-<snap>[-tmp-head]`
 * (l.27-36, 317-410); a backing image `bi-<name>-disk-<lvstore uuid>`
 * and its `-temp-head` (l.285-291).
 */

export type LvolRole = 'replica-head' | 'snapshot' | 'backing-image' | 'transient' | 'other';

export interface LvolName {
  role: LvolRole;
  /** The volume (heads, snapshots, transient lvols of a replica). */
  volume?: string;
  /** The replica (= its head's lvol name). */
  replica?: string;
  /** The snapshot's own name (without `<replica>-snap-`). */
  snapshot?: string;
  /** The backing image's name (without `bi-` and `-disk-<uuid>`). */
  backingImage?: string;
  /** For a transient lvol: what it is (`rebuilding`, `expired`, `cloning`, `clone entry point`, `temp head`). */
  transient?: string;
}

const REPLICA = '(.+)-r-([A-Za-z0-9]{8})';
const HEAD = new RegExp(`^${REPLICA}$`);
const TRANSIENT: [RegExp, string][] = [
  [new RegExp(`^(${REPLICA})-rebuilding$`), 'rebuilding'],
  [new RegExp(`^(${REPLICA})-expired-[A-Za-z0-9]{8}$`), 'expired'],
  [new RegExp(`^(${REPLICA})-cloning(?:-tmp)?$`), 'cloning'],
  [new RegExp(`^(${REPLICA})-clone-ep-.+$`), 'clone entry point'],
];
const SNAPSHOT = new RegExp(`^(${REPLICA})-snap-(.+)$`);
const BACKING = /^bi-(.+)-disk-([0-9a-fA-F-]{36})(-temp-head)?$/;

/** Classifies an lvol name; `lvsUuid` is the lvstore's (a backing image names its disk). */
export function classify(name: string, lvsUuid: string): LvolName {
  const bi = BACKING.exec(name);
  if (bi) {
    if (bi[3]) return { role: 'transient', backingImage: bi[1], transient: 'backing image temp head' };
    if (bi[2].toLowerCase() === lvsUuid.toLowerCase()) return { role: 'backing-image', backingImage: bi[1] };
    return { role: 'other' };
  }
  const h = HEAD.exec(name);
  if (h) return { role: 'replica-head', volume: h[1], replica: name };
  for (const [re, what] of TRANSIENT) {
    const m = re.exec(name);
    if (m) return { role: 'transient', replica: m[1], volume: m[2], transient: what };
  }
  const s = SNAPSHOT.exec(name);
  if (s) return { role: 'snapshot', replica: s[1], volume: s[2], snapshot: s[4] };
  return { role: 'other' };
}
