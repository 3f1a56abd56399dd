/**
 * `effitag dupes` on a large collection: pairs of unrelated images within the hash distance grow
 * with the square of the number of images (at 14 bits, about 333 among 10,000 random DCT hashes),
 * so the default distance shrinks as the collection grows and the report says which it used and
 * what it expects by chance (pipeline/dupes.ts: chanceWithin, hashDistanceFor).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeHashThreshold } from '../pipeline/dupes-lines.ts';
import { hammingDistance } from '../inference/perceptual-hash.ts';
import { seededRandom } from '../model/random-weights.ts';
import {
  CHANCE_PAIRS_BUDGET,
  chanceWithin,
  DEFAULT_MAX_DISTANCE,
  expectedChancePairs,
  findDupes,
  hashDistanceFor,
  pairsWithin,
} from '../pipeline/dupes.ts';
import { balancedHash } from './support/dupes-fixtures.ts';
import { indexedObject, MemoryIndex } from './support/memory-ports.ts';

/** `base` with `n` of its ones and `n` of its zeros swapped: 2n bits away, still balanced. */
function copyOf(base: string, n: number): string {
  const bits = [...BigInt(`0x${base}`).toString(2).padStart(64, '0')].map(Number);
  const ones = bits.flatMap((b, i) => (b ? [i] : [])).slice(0, n);
  const zeros = bits.flatMap((b, i) => (b ? [] : [i])).slice(0, n);
  for (const i of [...ones, ...zeros]) bits[i] ^= 1;
  return BigInt(`0b${bits.join('')}`)
    .toString(16)
    .padStart(16, '0');
}

const indexed = (key: string, phash: string) => indexedObject(key, { phash });

describe('dupes: chance pairs between unrelated hashes', () => {
  it('chanceWithin is the rate at which random balanced hashes fall within d bits (40,000 pairs drawn)', () => {
    assert.equal(chanceWithin(64), 1);
    assert.ok(Math.abs(chanceWithin(0) * 1.832624140942591e18 - 1) < 1e-9, 'one hash in C(64,32)');
    assert.equal(chanceWithin(21), chanceWithin(20), 'balanced hashes differ by an even number of bits');
    const rand = seededRandom(5);
    const pairs = 40_000;
    let within = 0;
    for (let i = 0; i < pairs; i++) if (hammingDistance(balancedHash(rand), balancedHash(rand)) <= 22) within++;
    const expected = pairs * chanceWithin(22); // about 560
    assert.ok(expected > 300, `enough pairs to measure: ${expected}`);
    assert.ok(Math.abs(within - expected) < 4 * Math.sqrt(expected), `${within} drawn within 22 bits, ${expected.toFixed(0)} expected`);
  });

  it('the default distance is the largest even one up to 14 whose chance pairs stay within budget', () => {
    assert.equal(hashDistanceFor(0), DEFAULT_MAX_DISTANCE);
    assert.equal(hashDistanceFor(500), DEFAULT_MAX_DISTANCE);
    let last = DEFAULT_MAX_DISTANCE;
    for (const n of [1_000, 3_000, 10_000, 60_000, 400_000, 1_000_000]) {
      const d = hashDistanceFor(n);
      assert.ok(d <= last && d % 2 === 0, `${n}: ${d} bits`);
      assert.ok(expectedChancePairs(n, d) <= CHANCE_PAIRS_BUDGET, `${n} hashes at ${d} bits`);
      assert.ok(d === DEFAULT_MAX_DISTANCE || expectedChancePairs(n, d + 2) > CHANCE_PAIRS_BUDGET, `${n}: ${d + 2} bits would do`);
      last = d;
    }
    assert.ok(hashDistanceFor(10_000) < DEFAULT_MAX_DISTANCE);
    assert.ok(expectedChancePairs(10_000, DEFAULT_MAX_DISTANCE) > 300, 'at 14 bits 10,000 hashes expect hundreds of chance pairs');
  });

  it('findDupes on 3,000 unrelated images and 3 copy pairs: by default only the copies; at a given 14 bits, chance groups too, and it says so', async () => {
    const rand = seededRandom(21);
    const index = new MemoryIndex();
    for (let i = 0; i < 3_000; i++) await index.put(indexed(`photo-${String(i).padStart(4, '0')}.jpg`, balancedHash(rand)));
    const copies: string[][] = [];
    for (let c = 0; c < 3; c++) {
      const original = balancedHash(rand);
      await index.put(indexed(`copy-${c}-a.jpg`, original));
      await index.put(indexed(`copy-${c}-b.jpg`, copyOf(original, 3))); // 6 bits: a resize or a recompression
      copies.push([`copy-${c}-a.jpg`, `copy-${c}-b.jpg`]);
    }
    const scaled = await findDupes({ index }, { bucket: 'p' });
    assert.equal(scaled.checked.hashed, 3_006);
    assert.equal(scaled.exact.source, 'scaled');
    assert.equal(scaled.exact.maxDistance, hashDistanceFor(3_006));
    assert.ok(scaled.exact.maxDistance < DEFAULT_MAX_DISTANCE);
    assert.ok(scaled.exact.expectedChancePairs <= CHANCE_PAIRS_BUDGET);
    assert.ok((scaled.exact.unscaledChancePairs ?? 0) > 20, `at 14 bits: ${scaled.exact.unscaledChancePairs}`);
    assert.deepEqual(
      scaled.groups.map((g) => g.keys),
      copies,
      'the three copy pairs and nothing else',
    );

    const given = await findDupes({ index }, { bucket: 'p' }, { maxDistance: DEFAULT_MAX_DISTANCE });
    assert.equal(given.exact.source, 'given');
    assert.equal(given.exact.unscaledChancePairs, undefined);
    const chance = given.groups.filter((g) => !g.keys.some((k) => k.startsWith('copy-')));
    assert.ok(
      chance.length >= 10,
      `unrelated images grouped at 14 bits: ${chance.length} groups (expected about ${given.exact.expectedChancePairs})`,
    );
    assert.match(
      describeHashThreshold(given.exact, 3_006),
      /within 14 bits \(--max-distance\): [\d.]+ pair\(s\) of unrelated images expected by chance among 3,006 hashes; some groups may join unrelated images/,
    );
    assert.match(
      describeHashThreshold(scaled.exact, 3_006),
      new RegExp(
        `within ${scaled.exact.maxDistance} bits, not 14: [\\d.]+ pair\\(s\\) of unrelated images expected by chance among 3,006 hashes \\(14 bits would expect [\\d.]+; --max-distance 14 finds more edited copies`,
      ),
    );
  });
});

describe('dupes: pairs within the distance, found by pieces', () => {
  /** Every pair compared, the definition pairsWithin must match. */
  const allPairs = (hashes: string[], d: number) => {
    const out: string[] = [];
    for (let i = 0; i < hashes.length; i++)
      for (let j = i + 1; j < hashes.length; j++) {
        const dist = hammingDistance(hashes[i], hashes[j]);
        if (dist <= d) out.push(`${i}-${j}-${dist}`);
      }
    return out.sort();
  };

  it('finds exactly the pairs every comparison finds, at every distance, each pair once', () => {
    const rand = seededRandom(8);
    const hashes: string[] = [];
    // Copies at every even distance up to 16 and some at odd ones (not balanced, still hashes), among random ones.
    for (let i = 0; i < 1_500; i++) {
      const base = balancedHash(rand);
      hashes.push(base);
      if (i % 10 === 0) hashes.push(copyOf(base, (i / 10) % 9));
      if (i % 37 === 0) {
        let v = BigInt(`0x${base}`);
        for (let b = 0; b < 1 + (i % 9); b++) v ^= 1n << BigInt(Math.floor(rand() * 64));
        hashes.push(v.toString(16).padStart(16, '0'));
      }
    }
    hashes.push(hashes[5], hashes[5]); // identical hashes: 0 bits
    for (const d of [0, 1, 2, 3, 4, 6, 8, 9, 10, 14]) {
      const found = pairsWithin(hashes, d).map(([i, j, dist]) => `${i}-${j}-${dist}`);
      assert.equal(new Set(found).size, found.length, `${d} bits: a pair twice`);
      const expected = allPairs(hashes, d);
      assert.ok(expected.length >= (d >= 2 ? 10 : 3), `${d} bits: enough pairs to compare (${expected.length})`);
      assert.deepEqual(found.sort(), expected, `${d} bits`);
    }
  });
});

describe('dupes: the scale counts hashed objects, and a given distance warns from more than one chance pair', () => {
  it('objects without a hash (or with a malformed one) do not shrink the distance', async () => {
    const index = new MemoryIndex();
    const rand = seededRandom(3);
    for (let i = 0; i < 400; i++) await index.put(indexed(`h${i}`, balancedHash(rand)));
    for (let i = 0; i < 1_000; i++) await index.put(indexedObject(`old${i}`)); // tagged before hashes were kept
    await index.put(indexed('broken', 'not-a-hash'));
    const report = await findDupes({ index }, { bucket: 'p' });
    assert.equal(report.checked.objects, 1_401);
    assert.equal(report.checked.hashed, 400);
    assert.equal(report.exact.maxDistance, hashDistanceFor(400));
    assert.equal(report.exact.maxDistance, DEFAULT_MAX_DISTANCE, '400 hashes keep 14 bits; 1,401 objects would not');
  });

  it('the warning starts past one expected chance pair, and only for a given distance', () => {
    const at = (expected: number, source: 'given' | 'scaled') =>
      describeHashThreshold({ maxDistance: 16, source, expectedChancePairs: expected }, 1_000);
    assert.match(at(1.5, 'given'), /; some groups may join unrelated images$/);
    assert.doesNotMatch(at(1, 'given'), /some groups may join/);
    assert.doesNotMatch(at(0.2, 'given'), /some groups may join/);
    assert.match(
      at(0.2, 'given'),
      /within 16 bits \(--max-distance\): 0\.2 pair\(s\) of unrelated images expected by chance among 1,000 hashes$/,
    );
  });

  it("a given distance below 14 reports no unscaled figure (that is the scaled report's)", async () => {
    const index = new MemoryIndex();
    const rand = seededRandom(4);
    for (let i = 0; i < 3_000; i++) await index.put(indexed(`h${i}`, balancedHash(rand)));
    const given = await findDupes({ index }, { bucket: 'p' }, { maxDistance: 4 });
    assert.equal(given.exact.source, 'given');
    assert.equal(given.exact.unscaledChancePairs, undefined);
  });
});
