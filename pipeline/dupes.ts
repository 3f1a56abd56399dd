/**
 * `effitag dupes`: groups of duplicate images under a bucket (and prefix), from what the pipeline
 * already stored, never from the images again, and never deleting anything.
 *
 * - **exact** groups: copies of one picture (resized, recompressed, brightened, watermarked): the
 *   objects' 64-bit perceptual hashes (inference/perceptual-hash.ts, in each index record) within
 *   `maxDistance` bits of each other, linked transitively. Whatever the model: a hash is not a model's.
 * - **near** groups: the same scene that is not the same picture (a burst, a crop, another edit):
 *   embeddings (the VectorIndex port, one space per model identity: the record's marker) whose
 *   cosine is at least `minScore`, between objects that are not already in one exact group.
 *
 * Two thresholds, one per tier, because one embedding threshold for both is the known source of false
 * "duplicates" in photo tools (Immich issue 31487). The hash's default is measured once (it is no
 * model's); the embedding's depends on the weights, so it is measured per space by
 * `effitag dupes calibrate` (pipeline/near-calibration.ts) and read from its record.
 */
import { hashHalves, isPerceptualHash, popcount } from '../inference/perceptual-hash.ts';
import { mapLimit } from './concurrency.ts';
import { CalibrationError, type CalibrationStore, type NearThreshold, nearThreshold } from './near-calibration.ts';
import type { VectorIndex } from './ports.ts';
import type { IndexRecord, TagIndex } from './tag-index.ts';

/**
 * Bits two hashes may differ by and be one picture, in a small collection. Measured
 * (bench/reference/hashes.json): on 800 images (80 distinct photographs and quadrants, 10 copies of
 * each) precision stays 1.000 up to 15 bits (the first false pair is at 16); 14 keeps a step of
 * margin (DCT hashes split 32/32, so distances are even). A larger collection gets a smaller
 * distance by default (hashDistanceFor): unrelated pairs grow with the square of its size.
 */
export const DEFAULT_MAX_DISTANCE = 14;
/**
 * Pairs of unrelated images the default distance may expect to link by chance, over the whole
 * collection. One: a report of a 10,000-image bucket at 14 bits would expect 333 false "copies"
 * (each merging two groups), at 10 bits 1.1.
 */
export const CHANCE_PAIRS_BUDGET = 1;

/**
 * The chance that two unrelated pictures' hashes are within `d` bits, were their hashes random:
 * the DCT hash sets exactly 32 of its 64 bits (those above the median), so two hashes differ in 2j
 * bits where j, the ones of one among the other's zeros, is hypergeometric: C(32,j)·C(32,32−j)/C(64,32).
 * Real photographs are no more spread out than random hashes: on the 800 measured images the tail
 * at 16 and 18 bits was 1.0 and 1.6 times this (21 false pairs at 16 bits against 21 expected;
 * 252 at 18 against 157), so this is a floor on false pairs, not a bound.
 */
export function chanceWithin(d: number): number {
  let p = 0;
  for (let j = 0; 2 * j <= Math.min(d, 64); j++) p += choose(32, j) * choose(32, 32 - j);
  return Math.min(1, p / choose(64, 32));
}

/** Unrelated pairs among `n` hashes expected within `d` bits by chance (chanceWithin). */
export function expectedChancePairs(n: number, d: number): number {
  return n < 2 ? 0 : ((n * (n - 1)) / 2) * chanceWithin(d);
}

/**
 * The default distance for `n` hashes: the largest even distance up to DEFAULT_MAX_DISTANCE at which
 * chance pairs stay within CHANCE_PAIRS_BUDGET (14 bits up to about 550 hashes, 12 to 2,000, 10 to
 * 9,300, 8 to 52,000, 6 to 384,000). Fewer bits keep fewer edited copies (recall 0.61 at 14, 0.51 at 10,
 * 0.47 at 8 on the measured copies: the crops go first), but a copy found is a copy.
 */
export function hashDistanceFor(n: number): number {
  let d = DEFAULT_MAX_DISTANCE;
  while (d > 0 && expectedChancePairs(n, d) > CHANCE_PAIRS_BUDGET) d -= 2;
  return d;
}

function choose(n: number, k: number): number {
  if (k < 0 || k > n) return 0;
  let c = 1;
  for (let i = 1; i <= k; i++) c = (c * (n - k + i)) / i;
  return c;
}

/** The hash distance a report used, and what it expects by chance. */
export interface HashThreshold {
  maxDistance: number;
  /** given: --max-distance; scaled: hashDistanceFor the number of hashed objects. */
  source: 'given' | 'scaled';
  /** Unrelated pairs expected within maxDistance among the hashed objects (expectedChancePairs). */
  expectedChancePairs: number;
  /** What DEFAULT_MAX_DISTANCE would have expected, where the scaled distance is below it. */
  unscaledChancePairs?: number;
}

/**
 * Cosine two embeddings must reach to be one scene in a space with no calibration: a guess, reported
 * as uncalibrated wherever it is used. The right value depends on the weights (random B0: every
 * photograph within 0.9995 of every other), so `effitag dupes calibrate` measures one per space
 * and `dupes` uses that instead (docs/search.md, "Near duplicates").
 */
export const DEFAULT_MIN_SCORE = 0.95;
/** Neighbours asked for per object (S3 Vectors answers at most 100). */
const NEIGHBOURS = 20;

export interface DupeGroup {
  keys: string[];
  kind: 'exact' | 'near';
  /** exact: 1 − (largest linking distance)/64; near: the lowest linking cosine. 1 = identical. */
  score: number;
  /** exact: the largest Hamming distance that links the group (bits). */
  distance?: number;
}

export interface DupesReport {
  groups: DupeGroup[];
  /** The hash distance the exact groups used, and the chance pairs it expects. */
  exact: HashThreshold;
  /** The near threshold of each space among the objects (with a vector index), and where it came from. */
  near: NearThreshold[];
  /** What was looked at: indexed objects, those with a hash, those with a vector. */
  checked: { objects: number; hashed: number; vectors: number };
}

/** An indexed object as the grouping sees it. */
export interface Candidate {
  key: string;
  hash?: string;
  /** Its vector space (the model marker that tagged it). */
  space?: string;
}

/** Bad input for `dupes` (a prefix with nothing indexed, a threshold out of range): one line, nothing changed. */
export class DupesError extends Error {
  override name = 'DupesError';
}

class UnionFind {
  private readonly parent: number[];
  constructor(n: number) {
    this.parent = Array.from({ length: n }, (_, i) => i);
  }
  find(i: number): number {
    let r = i;
    while (this.parent[r] !== r) r = this.parent[r];
    while (this.parent[i] !== r) [this.parent[i], i] = [r, this.parent[i]];
    return r;
  }
  union(a: number, b: number): void {
    const ra = this.find(a),
      rb = this.find(b);
    if (ra !== rb) this.parent[Math.max(ra, rb)] = Math.min(ra, rb);
  }
}

/**
 * Exact groups: every pair within `maxDistance` linked, transitively (pairsWithin finds the pairs).
 * Groups have two keys or more, keys sorted, best groups first.
 */
export function exactGroups(objects: readonly Candidate[], maxDistance = DEFAULT_MAX_DISTANCE): DupeGroup[] {
  checkDistance(maxDistance);
  const hashed = objects.filter((o): o is Candidate & { hash: string } => isPerceptualHash(o.hash));
  const uf = new UnionFind(hashed.length);
  const worst = new Map<number, number>();
  const links = pairsWithin(
    hashed.map((o) => o.hash),
    maxDistance,
  );
  for (const [i, j] of links) uf.union(i, j);
  for (const [i, , d] of links) {
    const r = uf.find(i);
    worst.set(r, Math.max(worst.get(r) ?? 0, d));
  }
  return collect(
    hashed.map((o, i) => [o.key, uf.find(i)] as const),
    (root) => {
      const distance = worst.get(root) ?? 0;
      return { kind: 'exact', score: 1 - distance / 64, distance };
    },
  );
}

/**
 * Every pair of hashes within `maxDistance` bits, as [i, j, distance] with i < j. Cut into
 * maxDistance + 1 pieces, two hashes within maxDistance bits agree exactly on at least one piece
 * (pigeonhole: the differing bits cannot touch every piece), so only hashes sharing a piece are
 * compared. A pair shares a piece of w bits by chance at about 2^-w, so the pieces pay where they
 * are wide: at 8 bits (the default past 9,300 hashes; pieces of 7 bits) about 7 % of the pairs are
 * compared. Measured on 30,000 random hashes: 0.71 s at 8 bits against 2.2 s for every pair; at 10
 * bits (20 % of the pairs) the bookkeeping ate the gain (2.5 s), so from 10 bits up every pair is.
 * 100,000 hashes at 6 bits (their default): 1.4 s.
 */
export function pairsWithin(hashes: readonly string[], maxDistance: number): [number, number, number][] {
  const n = hashes.length;
  // The halves parsed once: a comparison is two XORs and two popcounts.
  const hi = new Int32Array(n),
    lo = new Int32Array(n);
  hashes.forEach((h, i) => {
    [hi[i], lo[i]] = hashHalves(h);
  });
  const distance = (i: number, j: number) => popcount(hi[i] ^ hi[j]) + popcount(lo[i] ^ lo[j]);
  const links: [number, number, number][] = [];
  const pieces = maxDistance + 1;
  if (pieces > 9) {
    for (let i = 0; i < n; i++)
      for (let j = i + 1; j < n; j++) {
        const d = distance(i, j);
        if (d <= maxDistance) links.push([i, j, d]);
      }
    return links;
  }
  // Each piece's value per hash: pieces of 32 bits or fewer are exact numbers; the one 64-bit piece (at
  // 0 bits) may round, which only adds pairs to compare (and it has no earlier piece to skip on).
  const values = hashes.map((h) => BigInt(`0x${h}`));
  const bounds = Array.from({ length: pieces + 1 }, (_, p) => Math.floor((64 * p) / pieces));
  const keys = Array.from({ length: pieces }, (_, p) => {
    const width = BigInt(bounds[p + 1] - bounds[p]),
      shift = BigInt(64 - bounds[p + 1]);
    return values.map((v) => Number((v >> shift) & ((1n << width) - 1n)));
  });
  for (let p = 0; p < pieces; p++) {
    const buckets = new Map<number, number[]>();
    for (let i = 0; i < n; i++) {
      const bucket = buckets.get(keys[p][i]);
      if (bucket) bucket.push(i);
      else buckets.set(keys[p][i], [i]);
    }
    for (const members of buckets.values())
      for (let a = 0; a < members.length; a++)
        for (let b = a + 1; b < members.length; b++) {
          const i = members[a],
            j = members[b];
          // Each pair once: at the first piece the two share.
          let earlier = false;
          for (let q = 0; q < p && !earlier; q++) earlier = keys[q][i] === keys[q][j];
          if (earlier) continue;
          const d = distance(i, j);
          if (d <= maxDistance) links.push([i, j, d]);
        }
  }
  return links;
}

/**
 * Near groups: each object's nearest neighbours in its own space (same bucket and prefix) at
 * `minScore` or more, linked transitively; an exact group counts as one node, so a near group joins
 * at least two things that are not copies of each other. Objects without a vector are left out.
 */
export async function nearGroups(
  objects: readonly Candidate[],
  vectors: VectorIndex,
  o: {
    bucket: string;
    prefix?: string;
    minScore?: number;
    /** A threshold per space (overrides `minScore`); undefined: that space gets no near links (its objects still count). */
    minScoreFor?: (space: string) => number | undefined;
    exact?: readonly DupeGroup[];
    concurrency?: number;
  },
): Promise<{ groups: DupeGroup[]; vectors: number }> {
  const fixed = o.minScore ?? DEFAULT_MIN_SCORE;
  checkScore(fixed);
  const minScoreOf = o.minScoreFor ?? (() => fixed);
  const withSpace = objects.filter((c): c is Candidate & { space: string } => Boolean(c.space));
  const index = new Map(withSpace.map((c, i) => [c.key, i]));
  const uf = new UnionFind(withSpace.length);
  // Exact copies are one node: join them first, so a near link to any of them joins the group.
  for (const g of o.exact ?? []) {
    const members = g.keys.map((k) => index.get(k)).filter((i): i is number => i !== undefined);
    for (const m of members.slice(1)) uf.union(members[0], m);
  }
  const nodeOf = withSpace.map((_, i) => uf.find(i));
  const nearUf = new UnionFind(withSpace.length);
  const lowest = new Map<string, number>(); // "a\nb" of node roots → link score
  let found = 0;
  await mapLimit(
    withSpace.map((c, i) => ({ c, i })),
    o.concurrency ?? 8,
    async ({ c, i }) => {
      const vector = await vectors.get(c.space, { bucket: o.bucket, key: c.key });
      if (!vector) return;
      found++;
      const minScore = minScoreOf(c.space);
      if (minScore === undefined) return;
      const hits = await vectors.query(c.space, vector, {
        limit: NEIGHBOURS,
        bucket: o.bucket,
        ...(o.prefix ? { prefix: o.prefix } : {}),
        minScore,
      });
      for (const h of hits) {
        const j = index.get(h.key);
        // Another space's object never links (a query answers within its space; this guards a stand-in that does not).
        if (j === undefined || j === i || h.score < minScore || withSpace[j].space !== c.space) continue;
        if (nodeOf[i] === nodeOf[j]) continue; // copies of each other: the exact group has them
        nearUf.union(nodeOf[i], nodeOf[j]);
        const link = [nodeOf[i], nodeOf[j]].sort((a, b) => a - b).join('\n');
        lowest.set(link, Math.max(lowest.get(link) ?? -1, h.score));
      }
    },
  );
  const score = new Map<number, number>();
  for (const [link, s] of lowest) {
    const r = nearUf.find(Number(link.split('\n')[0]));
    score.set(r, Math.min(score.get(r) ?? 1, s));
  }
  const groups = collect(
    withSpace.map((c, i) => [c.key, nearUf.find(nodeOf[i])] as const),
    (root) => ({ kind: 'near', score: round(score.get(root) ?? 1) }),
    // A near group must join two nodes (two exact groups, or singletons), not one exact group alone.
    (members) => new Set(members.map((k) => nodeOf[index.get(k)!])).size >= 2,
  );
  return { groups, vectors: found };
}

/** Keys by group root → groups of two or more, keys sorted, highest score first then first key. */
function collect(
  memberships: readonly (readonly [string, number])[],
  describe: (root: number) => Omit<DupeGroup, 'keys'>,
  keep: (keys: string[]) => boolean = () => true,
): DupeGroup[] {
  const byRoot = new Map<number, string[]>();
  for (const [key, root] of memberships) byRoot.set(root, [...(byRoot.get(root) ?? []), key]);
  return [...byRoot]
    .filter(([, keys]) => keys.length >= 2 && keep(keys))
    .map(([root, keys]) => ({ keys: keys.sort(), ...describe(root) }))
    .sort((a, b) => b.score - a.score || a.keys[0].localeCompare(b.keys[0]));
}

const round = (x: number) => Math.round(x * 10_000) / 10_000;

/** What a hash distance may be, wherever it is given (the CLI's --max-distance, the gallery's maxDistance). */
export const DISTANCE_RULE = {
  valid: (d: number) => Number.isInteger(d) && d >= 0 && d <= 64,
  what: 'a whole number of bits from 0 to 64',
};
/** What a near threshold may be (the CLI's --min-score, the gallery's minScore). */
export const SCORE_RULE = { valid: (s: number) => s > 0 && s <= 1, what: 'a cosine above 0 and at most 1' };

function checkDistance(d: number): void {
  if (!DISTANCE_RULE.valid(d)) throw new DupesError(`--max-distance must be ${DISTANCE_RULE.what} (got ${d})`);
}

function checkScore(s: number): void {
  if (!SCORE_RULE.valid(s)) throw new DupesError(`--min-score must be ${SCORE_RULE.what} (got ${s})`);
}

/** The indexed objects under a bucket and prefix (failed taggings left out), from the tag index. */
export async function indexedCandidates(index: TagIndex, bucket: string, prefix = '', concurrency = 16): Promise<Candidate[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await index.keys(bucket, { prefix, cursor });
    keys.push(...page.keys);
    cursor = page.cursor;
  } while (cursor);
  const records = await mapLimit(keys, concurrency, async (key) => [key, await index.get(bucket, key)] as const);
  return records
    .filter((r): r is readonly [string, IndexRecord] => r[1] !== undefined && !r[1].failed)
    .map(([key, r]) => ({ key, ...(r.phash ? { hash: r.phash } : {}), ...(r.marker ? { space: r.marker } : {}) }));
}

/**
 * The whole command's work: read the index (and the vectors when there is a vector index), group,
 * report. Reads only. Throws DupesError for a target with nothing to compare.
 */
export async function findDupes(
  deps: { index: TagIndex; vectors?: VectorIndex; calibrations?: Pick<CalibrationStore, 'read'> },
  target: { bucket: string; prefix?: string },
  /** `minScore`: one near threshold for every space; absent, each space's calibration (nearThreshold). */
  o: { maxDistance?: number; minScore?: number } = {},
): Promise<DupesReport> {
  if (o.maxDistance !== undefined) checkDistance(o.maxDistance);
  if (o.minScore !== undefined) checkScore(o.minScore);
  const where = `s3://${target.bucket}/${target.prefix ?? ''}`;
  const objects = await indexedCandidates(deps.index, target.bucket, target.prefix ?? '');
  if (!objects.length) throw new DupesError(`nothing indexed under ${where}: tag images there first (or check the bucket and prefix)`);
  const hashed = objects.filter((c) => isPerceptualHash(c.hash)).length;
  const maxDistance = o.maxDistance ?? hashDistanceFor(hashed);
  const exactThreshold: HashThreshold = {
    maxDistance,
    source: o.maxDistance === undefined ? 'scaled' : 'given',
    expectedChancePairs: round(expectedChancePairs(hashed, maxDistance)),
    ...(o.maxDistance === undefined && maxDistance < DEFAULT_MAX_DISTANCE
      ? { unscaledChancePairs: round(expectedChancePairs(hashed, DEFAULT_MAX_DISTANCE)) }
      : {}),
  };
  const exact = exactGroups(objects, maxDistance);
  const thresholds = deps.vectors ? await spaceThresholds(objects, deps.calibrations, o.minScore) : [];
  const bySpace = new Map(thresholds.map((t) => [t.space, 'minScore' in t ? t.minScore : undefined]));
  const near = deps.vectors
    ? await nearGroups(objects, deps.vectors, {
        bucket: target.bucket,
        prefix: target.prefix || undefined,
        minScoreFor: (space) => bySpace.get(space),
        exact,
      })
    : { groups: [], vectors: 0 };
  if (!hashed && !near.vectors)
    throw new DupesError(
      `${objects.length} object(s) indexed under ${where}, none with a perceptual hash or an embedding (tagged before EffiTag stored them): tag them again to compare them`,
    );
  return {
    groups: [...exact, ...near.groups],
    exact: exactThreshold,
    near: thresholds,
    checked: { objects: objects.length, hashed, vectors: near.vectors },
  };
}

/** Each space's near threshold (sorted by space); a damaged or unreadable record is a DupesError naming it. */
async function spaceThresholds(
  objects: readonly Candidate[],
  store: Pick<CalibrationStore, 'read'> | undefined,
  given: number | undefined,
): Promise<NearThreshold[]> {
  const spaces = [...new Set(objects.flatMap((c) => (c.space ? [c.space] : [])))].sort();
  try {
    return await Promise.all(spaces.map((space) => nearThreshold(space, { given, store, fallback: DEFAULT_MIN_SCORE })));
  } catch (err) {
    if (err instanceof CalibrationError) throw new DupesError(err.message);
    throw err;
  }
}
