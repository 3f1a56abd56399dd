import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { chooseVariant } from '../tiers/choose.ts';
import { estimateCosts, INDEX_ENTRIES_PER_IMAGE, type BenchFile } from '../tiers/cost.ts';
import { readTiersJson, resolveTiersPath, SHIPPED_DEFAULTS } from '../tiers/load.ts';
import { routeObject } from '../tiers/route.ts';
import { parseTiers, TiersConfigError, validateTiers, type TiersFile } from '../tiers/schema.ts';
import { spotAlternatives } from '../tiers/prices.ts';
import { tempDir } from './support/fixtures.ts';

const cli = (...args: string[]) =>
  promisify(execFile)(process.execPath, ['bin/effitag.js', ...args]).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );

/** A minimal valid configuration to mutate per case. */
function base(): Record<string, any> {
  return {
    version: 1,
    tiers: {
      cheap: { variants: ['b0'], compute: { target: 'lambda-cpu', memoryMb: 3538 }, engine: 'ort', batchSize: 8 },
      gpu: {
        variants: ['b0', 'b3'],
        compute: { target: 'ecs-gpu', instanceType: 'g4dn.xlarge', capacity: 'spot', maxTasks: 2 },
        engine: 'tfjs',
        batchSize: 32,
        acceptsOverrides: true,
      },
      locked: {
        variants: ['b7'],
        compute: { target: 'ecs-gpu', instanceType: 'g5.xlarge', capacity: 'on-demand', maxTasks: 1 },
        engine: 'tfjs',
        batchSize: 4,
      },
    },
    routing: { default: { tier: 'cheap', allowOverrides: ['gpu'] }, rules: [{ prefix: 'big/', tier: 'locked' }] },
  };
}

function errorsOf(raw: unknown): string[] {
  return validateTiers(raw)
    .issues.filter((i) => i.severity === 'error')
    .map((i) => `${i.path}: ${i.message}`);
}

describe('tiers configuration', () => {
  it('every shipped default validates without errors', () => {
    const shipped = [SHIPPED_DEFAULTS, ...readdirSync('examples/tiers').map((f) => join('examples/tiers', f))];
    assert.ok(shipped.length >= 2);
    for (const file of shipped) {
      const result = validateTiers(readTiersJson(file));
      assert.deepEqual(
        result.issues.filter((i) => i.severity === 'error'),
        [],
        file,
      );
      assert.ok(result.config, file);
    }
  });

  const invalid: [string, (c: Record<string, any>) => void, RegExp][] = [
    [
      'unknown variant',
      (c) => {
        c.tiers.gpu.variants.push('b9');
      },
      /^tiers\.gpu\.variants\[2\]: unknown variant "b9"; known: b0, b1, b2, b3, b4, b5, b6, b7, v2-b0/,
    ],
    [
      'bad instance type',
      (c) => {
        c.tiers.gpu.compute.instanceType = 'm5.large';
      },
      /^tiers\.gpu\.compute\.instanceType: unknown instance type "m5\.large"/,
    ],
    [
      'overlapping prefixes',
      (c) => {
        c.routing.rules.push({ prefix: 'big/', tier: 'gpu' });
      },
      /^routing\.rules\[1\]\.prefix: overlaps routing\.rules\[0\]: both match prefix "big\/"/,
    ],
    [
      'negative batch size',
      (c) => {
        c.tiers.cheap.batchSize = -4;
      },
      /^tiers\.cheap\.batchSize: /,
    ],
    [
      'missing default tier',
      (c) => {
        c.routing.default.tier = 'nope';
      },
      /^routing\.default\.tier: missing default tier: "nope" is not defined/,
    ],
    [
      'override to a tier that forbids it',
      (c) => {
        c.routing.rules[0].allowOverrides = ['cheap'];
      },
      /^routing\.rules\[0\]\.allowOverrides\[0\]: tier "cheap" does not accept overrides/,
    ],
    [
      'rule to an unknown tier',
      (c) => {
        c.routing.rules[0].tier = 'ghost';
      },
      /^routing\.rules\[0\]\.tier: unknown tier "ghost"/,
    ],
    [
      'custom φ without weights',
      (c) => {
        c.tiers.gpu.variants.push('phi-1.5');
      },
      /^tiers\.gpu\.variants\[2\]: custom variant "phi-1\.5" needs its weights/,
    ],
    [
      'unknown field',
      (c) => {
        c.tiers.cheap.gpuCount = 1;
      },
      /^tiers\.cheap: .*gpuCount/,
    ],
    [
      'Lambda memory out of range',
      (c) => {
        c.tiers.cheap.compute.memoryMb = 20000;
      },
      /^tiers\.cheap\.compute\.memoryMb: /,
    ],
    [
      'bad write-back mode',
      (c) => {
        c.tiers.cheap.writeBack = 'email';
      },
      /^tiers\.cheap\.writeBack: /,
    ],
    // The cap is the SQS event source's maximum concurrency, which AWS accepts from 2 to 1000.
    [
      'Lambda concurrency cap below 2',
      (c) => {
        c.tiers.cheap.compute.maxConcurrency = 1;
      },
      /^tiers\.cheap\.compute\.maxConcurrency: the SQS event source allows 2 to 1000 concurrent invocations/,
    ],
    [
      'unknown spot alternative',
      (c) => {
        c.tiers.gpu.compute.alternativeInstanceTypes = ['g5.xlarge', 'x1.big'];
      },
      /^tiers\.gpu\.compute\.alternativeInstanceTypes\[1\]: unknown instance type "x1\.big"/,
    ],
  ];
  for (const [name, mutate, expected] of invalid) {
    it(`invalid: ${name} fails naming the path`, () => {
      const raw = base();
      mutate(raw);
      const errors = errorsOf(raw);
      assert.ok(
        errors.some((e) => expected.test(e)),
        `expected ${expected}, got:\n${errors.join('\n')}`,
      );
      assert.throws(
        () => parseTiers(raw, 'x.json'),
        (e: Error) => e instanceof TiersConfigError && e.message.startsWith('x.json: invalid tiers configuration'),
      );
    });
  }

  it('warns about a redundant nested rule without failing', () => {
    const raw = base();
    raw.routing.rules.push({ prefix: 'big/more/', tier: 'locked' });
    const result = validateTiers(raw);
    assert.ok(result.config);
    assert.ok(result.issues.some((i) => i.severity === 'warning' && i.path === 'routing.rules[1]' && /redundant/.test(i.message)));
  });

  it('`tiers validate` exits 1 with path-named errors, 0 on a valid file', async () => {
    const dir = await tempDir();
    const raw = base();
    raw.tiers.gpu.variants.push('b9');
    writeFileSync(join(dir, 'bad.json'), JSON.stringify(raw));
    const bad = await cli('tiers', 'validate', join(dir, 'bad.json'));
    assert.equal(bad.code, 1);
    assert.match(bad.stdout, /error: tiers\.gpu\.variants\[2\]: unknown variant "b9"/);
    const good = await cli('tiers', 'validate', SHIPPED_DEFAULTS);
    assert.equal(good.code, 0);
    assert.match(good.stdout, /valid/);
  });
});

describe('spot alternatives of a GPU instance type', () => {
  it('as many GPUs, no slower GPU, at least the vCPUs and memory, at most twice the price; cheapest first', () => {
    assert.deepEqual(spotAlternatives('g4dn.xlarge'), ['g4dn.2xlarge', 'g6.xlarge', 'g6.2xlarge', 'g5.xlarge']);
    const a10g = spotAlternatives('g5.xlarge');
    assert.ok(!a10g.some((t) => t.startsWith('g4dn')), `a T4 is no alternative to an A10G: ${a10g}`);
    assert.ok(!spotAlternatives('g4dn.12xlarge').some((t) => !['g5.12xlarge'].includes(t)), 'four-GPU types only for a four-GPU type');
    assert.deepEqual(spotAlternatives('m5.large'), []);
  });
});

describe('size-aware variant choice', () => {
  const all = { variants: ['b0', 'b1', 'b2', 'b3', 'b4', 'b5', 'b6', 'b7'] };
  const cases: [string, { variants: any[] }, number, number, string][] = [
    ['thumbnail below every resolution → smallest', all, 150, 150, 'b0'],
    ['exact native size of B3', all, 300, 300, 'b3'],
    ['exact native size of B7', all, 600, 600, 'b7'],
    ['between B2 (260) and B3 (300): 280 + 10 % reaches B3', all, 280, 400, 'b3'],
    ['between B2 and B3 without reach: 265 + 10 % < 300', all, 265, 400, 'b2'],
    ['panorama: the shorter side decides (230 + 10 % = 253 → B1 at 240)', all, 6000, 230, 'b1'],
    ['tall panorama', all, 390, 8000, 'b4'],
    ['huge photo gets the largest allowed', all, 4000, 3000, 'b7'],
    ['tier allowing one variant always gets it (small)', { variants: ['b3'] }, 100, 100, 'b3'],
    ['tier allowing one variant always gets it (large)', { variants: ['b3'] }, 5000, 5000, 'b3'],
    ['custom φ = 1 (258 px) between B1 and B2', { variants: ['b0', { phi: 1, weights: 's3://w/phi1' }, 'b3'] }, 260, 260, 'phi-1'],
    ['equal resolutions: V2-L beats V2-M at 480 (more multiply-adds)', { variants: ['v2-m', 'v2-l', 'v2-s'] }, 500, 500, 'v2-l'],
    ['V2-S at 384 for a 400-px image', { variants: ['v2-m', 'v2-s', 'v2-b0'] }, 400, 700, 'v2-s'],
  ];
  for (const [name, tier, w, h, expected] of cases) {
    it(`${name}: ${w}×${h} → ${expected}`, () => {
      const choice = chooseVariant(tier, w, h, 0.1);
      assert.equal(choice.variant, expected);
      assert.ok(choice.reason.length > 10);
    });
  }
  it('tolerance 0 requires the native resolution', () => {
    assert.equal(chooseVariant(all, 280, 280, 0).variant, 'b2');
  });
  it('is independent of the order variants are listed in', () => {
    assert.equal(chooseVariant({ variants: ['b7', 'b0', 'b3'] }, 320, 320).variant, 'b3');
  });
  it('rejects non-positive sizes', () => {
    assert.throws(() => chooseVariant(all, 0, 10), /positive/);
  });
});

describe('routing', () => {
  const config = (): TiersFile => {
    const raw = base();
    raw.tiers.gpu.acceptsOverrides = true;
    raw.routing.rules = [
      { prefix: 'photos/', tier: 'gpu', allowOverrides: [] },
      { prefix: 'photos/raw/', tier: 'locked' },
      { prefix: 'photos/', bucket: 'special-bucket', tier: 'locked' },
      { prefix: 'été/ä b+c/', tier: 'gpu' },
    ];
    return parseTiers(raw);
  };

  it('longest prefix wins; bucket-specific rules win among equals; else the default', () => {
    const c = config();
    assert.equal(routeObject(c, { key: 'photos/a.jpg' }).tier, 'gpu');
    assert.equal(routeObject(c, { key: 'photos/raw/a.jpg' }).tier, 'locked');
    assert.equal(routeObject(c, { key: 'photos/a.jpg', bucket: 'special-bucket' }).tier, 'locked');
    assert.equal(routeObject(c, { key: 'photos/a.jpg', bucket: 'other' }).tier, 'gpu');
    const d = routeObject(c, { key: 'docs/a.jpg' });
    assert.deepEqual([d.tier, d.matched], ['cheap', 'routing.default']);
    assert.equal(routeObject(c, { key: 'photos' }).tier, 'cheap', 'the prefix must match fully');
  });

  it('keys with spaces and unicode match decoded prefixes', () => {
    const c = config();
    assert.equal(routeObject(c, { key: 'été/ä b+c/naïve photo (1).jpg' }).tier, 'gpu');
    assert.equal(routeObject(c, { key: 'ete/ä b+c/x.jpg' }).tier, 'cheap');
  });

  it('honours an allowed override and refuses the others, saying why', () => {
    const c = config();
    const ok = routeObject(c, { key: 'docs/a.jpg', metadata: { 'effitag-tier': 'gpu' } });
    assert.equal(ok.tier, 'gpu');
    assert.equal(ok.override?.honoured, true);
    const viaHeader = routeObject(c, { key: 'docs/a.jpg', metadata: { 'X-Amz-Meta-Effitag-Tier': 'GPU' } });
    assert.equal(viaHeader.tier, 'gpu');
    const notListed = routeObject(c, { key: 'photos/a.jpg', metadata: { 'effitag-tier': 'cheap' } });
    assert.deepEqual([notListed.tier, notListed.override?.honoured], ['gpu', false]);
    assert.match(notListed.override!.reason, /does not allow overrides to "cheap"/);
    const unknown = routeObject(c, { key: 'docs/a.jpg', metadata: { 'effitag-tier': 'platinum' } });
    assert.deepEqual([unknown.tier, unknown.override?.reason], ['cheap', 'no tier named "platinum"']);
  });

  it('`tiers explain` prints the tier, the rule, the variant and why', async () => {
    const { stdout, code } = await cli(
      'tiers',
      'explain',
      '--tiers',
      SHIPPED_DEFAULTS,
      '--key',
      'catalog/shoes 1.jpg',
      '--width',
      '1200',
      '--height',
      '270',
      '--metadata',
      'effitag-tier=premium',
    );
    assert.equal(code, 0);
    assert.match(stdout, /tier:\s+premium \(matched routing\.rules\[0\] \(prefix "catalog\/"\)\)/);
    assert.match(stdout, /override: "premium" honoured/);
    assert.match(stdout, /variant:\s+b3 at 300×300/);
    assert.match(stdout, /why:\s+shorter side 270px/);
  });
});

describe('tiers cost', () => {
  it('arithmetic on known numbers: GPU $/h ÷ images/h, Lambda GB-seconds + requests', () => {
    const raw = base();
    raw.prices = { instances: { 'g4dn.xlarge': 1.0 }, spotFraction: 0.5 };
    raw.tiers.gpu.throughput = { b0: 100, b3: 50 };
    raw.tiers.cheap.compute = { target: 'lambda-cpu', memoryMb: 3538, architecture: 'x86_64' };
    raw.tiers.cheap.batchSize = 10;
    const bench: BenchFile = { machine: { cpus: 2 }, rows: [{ engine: 'ort', variant: 'b0', batch: 8, imagesPerSecond: 100 }] };
    const report = estimateCosts(parseTiers(raw), bench);
    const row = (tier: string, variant: string) => report.rows.find((r) => r.tier === tier && r.variant === variant)!;
    // g4dn.xlarge at $1.00/h, spot at 50 % → $0.50/h; 100 images/s = 360,000/h → $1.3889 per 1M.
    assert.ok(Math.abs(row('gpu', 'b0').dollarsPerMillion! - (0.5 / 360_000) * 1e6) < 1e-9);
    assert.ok(Math.abs(row('gpu', 'b3').dollarsPerMillion! - (0.5 / 180_000) * 1e6) < 1e-9);
    // All-in: metadata write-back ($0.40 × 2 GETs + $5.00 CopyObject + 3 × $0.40 SQS = $7.00) and the
    // tag index: (entries + record) writes at $0.625 and one read at $0.125 per million.
    const entries = INDEX_ENTRIES_PER_IMAGE;
    assert.ok(entries > 5 && entries < 9, `${entries} entries per image`);
    const index = (entries + 1) * 0.625 + 0.125;
    assert.ok(Math.abs(row('gpu', 'b0').allInPerMillion! - ((0.5 / 360_000) * 1e6 + 7.0 + index)) < 1e-9);
    assert.ok(Math.abs(row('gpu', 'b0').vsRekognition! - 1000 / ((0.5 / 360_000) * 1e6 + 7.0 + index)) < 1e-6);
    // Without the index, and for each write-back mode.
    const plain = estimateCosts(parseTiers(raw), bench, { index: false }).rows.find((r) => r.tier === 'gpu' && r.variant === 'b0')!;
    assert.ok(Math.abs(plain.allInPerMillion! - ((0.5 / 360_000) * 1e6 + 7.0)) < 1e-9);
    for (const [mode, requests, reads] of [
      ['tags', 0.8 + 1.2 + 0.4 + 5.0, 1],
      ['both', 0.8 + 1.2 + 5.0 + 0.4 + 5.0, 1],
      ['index', 0.8 + 1.2, 2],
    ] as const) {
      raw.tiers.gpu.writeBack = mode;
      const r = estimateCosts(parseTiers(raw), bench).rows.find((x) => x.tier === 'gpu' && x.variant === 'b0')!;
      assert.ok(Math.abs(r.requestsPerMillion! - requests) < 1e-9, mode);
      assert.ok(Math.abs(r.indexPerMillion! - ((entries + 1) * 0.625 + reads * 0.125)) < 1e-9, mode);
    }
    // Lambda 3538 MB = 2 vCPU → benchmark 100 images/s on 2 cores stays 100 images/s;
    // per image 0.01 s × 3.455 GB × 0.0000166667 + 0.2/1e6/10.
    const perImage = 0.01 * (3538 / 1024) * 0.0000166667 + 0.2 / 1e6 / 10;
    assert.ok(Math.abs(row('cheap', 'b0').dollarsPerMillion! - perImage * 1e6) < 1e-9);
    assert.equal(row('cheap', 'b0').imagesPerSecond, 100);
    // No throughput known → said, not invented.
    assert.equal(row('locked', 'b7').dollarsPerMillion, undefined);
    assert.match(row('locked', 'b7').note!, /no throughput/);
    assert.ok(report.assumptions.some((a) => /spot = 50 %/.test(a)));
  });

  it('CPU tiers pay for decoding too, by image size: a line fitted on the benchmark sizes', () => {
    const raw = base();
    raw.tiers.cheap.compute = { target: 'lambda-cpu', memoryMb: 3538, architecture: 'x86_64' };
    const MB = 1048576;
    const bench: BenchFile = {
      machine: { cpus: 2 },
      rows: [{ engine: 'ort', variant: 'b0', batch: 8, imagesPerSecond: 100 }],
      decode: [
        { source: '1024×768 JPEG', bytes: MB, inFlight: 1, msPerImage: 9, cpuMsPerImage: 10 },
        { source: '1024×768 JPEG', bytes: MB, inFlight: 16, msPerImage: 5, cpuMsPerImage: 10 },
        { source: '4032×3024 JPEG', bytes: 3 * MB, inFlight: 4, msPerImage: 15, cpuMsPerImage: 30 },
      ],
    };
    const cheap = (report: ReturnType<typeof estimateCosts>) => report.rows.find((r) => r.tier === 'cheap' && r.variant === 'b0')!;
    // CPU-ms = 0 + 10 per MB. At the reference (the 1 MB 1024×768): inference 2 cores / 100 images/s
    // = 20 core-ms plus 10 decoding → 2 vCPU / 30 ms = 66.7 images/s.
    const reference = cheap(estimateCosts(parseTiers(raw), bench));
    assert.ok(Math.abs(reference.imagesPerSecond! - 2 / 0.03) < 1e-9);
    assert.match(reference.throughputSource!, /decoding 1024 KB images/);
    // 3 MB images (as a backfill dry run would measure): 20 + 30 core-ms → 40 images/s.
    const large = cheap(estimateCosts(parseTiers(raw), bench, { imageBytes: () => 3 * MB }));
    assert.ok(Math.abs(large.imagesPerSecond! - 2 / 0.05) < 1e-9);
    assert.ok(large.dollarsPerMillion! > reference.dollarsPerMillion!);
  });

  it('an older benchmark file (wall time only, one size) still prices decoding: wall time × cores', () => {
    const raw = base();
    raw.tiers.cheap.compute = { target: 'lambda-cpu', memoryMb: 3538, architecture: 'x86_64' };
    const bench: BenchFile = {
      machine: { cpus: 2 },
      rows: [{ engine: 'ort', variant: 'b0', batch: 8, imagesPerSecond: 100 }],
      decode: [
        { source: '1024×768 JPEG', inFlight: 1, msPerImage: 8 },
        { source: '1024×768 JPEG', inFlight: 16, msPerImage: 5 },
      ],
    };
    const row = estimateCosts(parseTiers(raw), bench).rows.find((r) => r.tier === 'cheap' && r.variant === 'b0')!;
    assert.ok(Math.abs(row.imagesPerSecond! - 2 / 0.03) < 1e-9, '5 ms × 2 cores = 10 CPU-ms per image');
    assert.match(row.throughputSource!, /decoding a 1024×768 JPEG/);
  });

  it('a GPU tier is capped at the rate its vCPUs decode images', () => {
    const raw = base();
    raw.tiers.gpu.throughput = { b0: 2000, b3: 100 };
    const MB = 1048576;
    const bench: BenchFile = {
      machine: { cpus: 2 },
      rows: [],
      decode: [
        { source: '1024×768 JPEG', bytes: MB, inFlight: 16, msPerImage: 5, cpuMsPerImage: 10 },
        { source: '4032×3024 JPEG', bytes: 3 * MB, inFlight: 4, msPerImage: 15, cpuMsPerImage: 30 },
      ],
    };
    const rows = (imageBytes?: number) => estimateCosts(parseTiers(raw), bench, { imageBytes: () => imageBytes }).rows;
    const row = (variant: string, imageBytes?: number) => rows(imageBytes).find((r) => r.tier === 'gpu' && r.variant === variant)!;
    // g4dn.xlarge has 4 vCPUs; 10 CPU-ms per reference image → at most 400 images/s.
    assert.equal(row('b0').imagesPerSecond, 400);
    assert.match(row('b0').throughputSource!, /capped by decoding 1024 KB images on 4 vCPUs/);
    assert.equal(row('b3').imagesPerSecond, 100, 'below the cap: the configured figure');
    // 3 MB photos: 30 CPU-ms each → at most 133 images/s.
    assert.ok(Math.abs(row('b0', 3 * MB).imagesPerSecond! - 4000 / 30) < 1e-9);
  });

  it('`tiers cost` prints the table with Rekognition and the assumptions', async () => {
    const { stdout, code } = await cli('tiers', 'cost', '--tiers', SHIPPED_DEFAULTS);
    assert.equal(code, 0);
    assert.match(stdout, /Amazon Rekognition label detection: \$1000 per 1M images/);
    assert.match(stdout, /standard\s+b0\s+g4dn\.xlarge spot/);
    assert.match(stdout, /Assumptions:/);
  });
});

describe('tiers file resolution', () => {
  it('explicit path, then EFFITAG_TIERS_FILE, then cdk.json context, then the shipped defaults', async () => {
    const dir = await tempDir();
    assert.equal(resolveTiersPath('x.json', {}, dir), join(dir, 'x.json'));
    assert.equal(resolveTiersPath(undefined, { EFFITAG_TIERS_FILE: 'env.json' }, dir), join(dir, 'env.json'));
    assert.equal(resolveTiersPath(undefined, {}, dir), SHIPPED_DEFAULTS);
    writeFileSync(join(dir, 'cdk.json'), JSON.stringify({ context: { 'effitag:tiersFile': 'ctx.json' } }));
    assert.equal(resolveTiersPath(undefined, {}, dir), join(dir, 'ctx.json'));
  });

  it('a tiers file that cannot be read is one line naming it and why in words, as `tiers validate` prints it', async () => {
    const missing = join(await tempDir(), 'nope.json');
    assert.throws(() => readTiersJson(missing), { message: `cannot read tiers file ${missing}: no such file or directory` });
    const r = await cli('tiers', 'validate', '--tiers', missing);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot read tiers file .*nope\.json: no such file or directory\n/);
    assert.doesNotMatch(r.stderr, /ENOENT/);
  });
});
