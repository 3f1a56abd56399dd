/**
 * The deploy rehearsal (test/rehearsal/): what `cdk synth` produced, run the way AWS runs it, and
 * every call each principal made checked against the template's IAM policies. Plus the two ways it
 * must fail: a bundle needing a module its layers lack, and a role lacking a permission a code path
 * uses.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it, before } from 'node:test';
import { HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { REPO_ROOT } from '../cdk/constructs/bundling.ts';
import { deploySteps } from '../cdk/deploy-steps.ts';
import { loadTiers } from '../tiers/load.ts';
import { publishWeights } from '../pipeline/aws/s3-weights.ts';
import { taskMessage, type Task } from '../pipeline/task.ts';
import { gradientImage } from './support/fixtures.ts';
import { startGpuContainer, type Container } from './rehearsal/container.ts';
import { waitFor } from './support/local-stack.ts';
import { evaluateCalls, readAudit } from './rehearsal/iam.ts';
import { ColdStartError, startLambda } from './rehearsal/lambda.ts';
import { CHEAP_MODELS, metadataOfAll, runRehearsal, SCENARIO, taskTier, weightsCatalog, type RehearsalReport } from './rehearsal/run.ts';
import { readAssembly, SHIPPED_TIERS } from './rehearsal/template.ts';
import { startWorld } from './rehearsal/world.ts';

/** The defaults' run, shared with the SIGKILL test (its synthesized assembly). */
let defaults: RehearsalReport | undefined;

/** What every shipped tiers file must show, deployed in the README's order. */
function assertDeployedAsDocumented(report: RehearsalReport) {
  assert.deepEqual(
    report.steps.map((s) => s.id),
    deploySteps(report.tiersFile).map((s) => s.id),
    "the README's steps, in the README's order",
  );
  // Deployed with no weights: every GPU task came up and kept running (no crash loop, no failed deployment).
  assert.ok(report.tasks.length > 0);
  for (const t of report.tasks) {
    assert.equal(t.runningBeforeWeights, true, `${t.tier}: running before any weights were published`);
    assert.equal(t.exitCode, 0, `${t.tier} stops cleanly on SIGTERM:\n${t.output.slice(-2000)}`);
  }
  // A first upload per tier waited untagged, with a WARN naming tier, model, location and fix…
  assert.ok(report.firstUploads.length > 0);
  for (const u of report.firstUploads) {
    assert.equal(u.statusBeforeWeights, undefined, `${u.key} untagged while ${u.model} is not published`);
    assert.equal(u.waitingLog?.level, 'warn', JSON.stringify(u.waitingLog));
    assert.equal(u.waitingLog?.tier, u.tier);
    assert.equal(u.waitingLog?.model, u.model);
    assert.match(String(u.waitingLog?.weights), /^s3:\/\/rh-/);
    assert.match(String(u.waitingLog?.fix), /effitag weights publish --tiers/);
    // …and once its model was published (no redeploy), the backfill tagged it with that model.
    if (CHEAP_MODELS.includes(u.model)) {
      assert.equal(u.after?.['effitag-status'], 'tagged', `${u.key}: ${JSON.stringify(u.after)}`);
      assert.match(u.after?.['effitag-model'] ?? '', new RegExp(`^${u.model}@[0-9a-f]{12}`));
    } else {
      assert.equal(u.after?.['effitag-status'], undefined, `${u.key} keeps waiting: ${u.model} was not published`);
    }
  }
  // Waiting is never a failure: nothing in any DLQ, no router batch failed.
  assert.ok(
    Object.values(report.deadLetters).every((n) => n === 0),
    JSON.stringify(report.deadLetters),
  );
  assert.ok(
    report.routerInvocations.every((i) => i.failures === 0 && !i.error),
    JSON.stringify(report.routerInvocations),
  );
  assert.deepEqual(
    report.denied.map((v) => `${v.role} ${v.action} ${v.resource} ${v.result}`),
    [],
  );
  // The scaling of every GPU tier, as Application Auto Scaling applies the template's alarms and steps.
  assert.deepEqual(report.scaling.map((t) => t.tier).sort(), report.tasks.map((t) => t.tier).sort());
  for (const t of report.scaling) assert.deepEqual(t.problems, [], `${t.tier}: ${t.problems.join('; ')}`);
}

describe('deploy rehearsal: tiers/defaults.json, deployed as the README says, run as AWS runs it', () => {
  let report: RehearsalReport;
  before(async () => {
    report = await runRehearsal({ tiersFile: SHIPPED_TIERS[0] });
    defaults = report;
  });

  it('deployed with no weights, every tier waits with a logged reason, and tags its first upload once its weights are published', () => {
    assertDeployedAsDocumented(report);
    assert.deepEqual(
      report.firstUploads.map((u) => [u.tier, u.model]),
      [
        ['economy', 'b0'],
        ['standard', 'b0'],
        ['premium', 'b3'],
      ],
    );
    assert.deepEqual(report.lacking, ['b5', 'v2-s', 'b7', 'v2-m']);
  });

  it('every Node Lambda cold-starts from its asset and its own layers alone, and each GPU task stops cleanly on SIGTERM', () => {
    assert.deepEqual(report.functions.map((f) => f.logicalId.replace(/[0-9A-F]{8}$/, '')).sort(), [
      'BackfillBatch',
      'CpueconomyWorker',
      'IngestRouter',
    ]);
    assert.deepEqual(report.tasks.map((t) => [t.tier, t.exitCode]).sort(), [
      ['premium', 0],
      ['standard', 0],
    ]);
    for (const t of report.tasks) assert.match(t.output, /"msg":"engine".*"engine":"ort"/, 'the container ran on the CPU engine');
  });

  it('upload → router bundle → tier queue → worker bundle (Lambda) or GPU container → metadata written', () => {
    const photo = report.objects[SCENARIO.photo];
    const catalog = report.objects[SCENARIO.catalog];
    assert.ok(typeof photo === 'object' && typeof catalog === 'object');
    assert.equal(photo['effitag-status'], 'tagged');
    assert.match(photo['effitag-model'], /^b0@[0-9a-f]{12}/);
    assert.ok(photo['effitag-tags'].split(';').length >= 1);
    assert.equal(catalog['effitag-status'], 'tagged', 'catalog/ routes to the standard GPU tier, whose container tagged it');
    assert.equal(
      (report.objects[SCENARIO.heic] as Record<string, string>)['effitag-status'],
      'tagged',
      'the container bundle decodes HEIC',
    );
    const gpu = report.principals.find((p) => p.runs.startsWith('ECS task'))!;
    assert.ok(
      gpu.calls.some((c) => c.command === 'CopyObject' && c.input.Key === SCENARIO.catalog),
      'the container wrote the catalog image',
    );
    const worker = report.principals.find((p) => /CpueconomyWorker/.test(p.runs))!;
    assert.ok(
      worker.calls.some((c) => c.command === 'CopyObject' && c.input.Key === SCENARIO.photo),
      'the worker Lambda wrote the photo',
    );
    // The worker Lambda got FIFO batches as Lambda delivers them.
    assert.ok(report.workerInvocations.length > 0);
    for (const attribute of ['ApproximateReceiveCount', 'MessageDeduplicationId', 'MessageGroupId', 'SentTimestamp']) {
      assert.ok(
        report.workerInvocations.every((i) => i.attributes.includes(attribute)),
        `${attribute} in ${JSON.stringify(report.workerInvocations[0])}`,
      );
    }
  });

  it('the failure paths end where they should: nothing in any DLQ', () => {
    assert.equal((report.objects[SCENARIO.broken] as Record<string, string>)['effitag-status'], 'failed');
    assert.equal(
      report.objects[SCENARIO.textFile] && (report.objects[SCENARIO.textFile] as Record<string, string>)['effitag-status'],
      undefined,
      'a text file is left alone',
    );
    assert.equal(report.objects[SCENARIO.deleted], 'missing');
    // A premium original needing B7, which this run never publishes: untagged, waiting, not failed.
    assert.deepEqual(report.objects[SCENARIO.unpublished], {});
    assert.ok(report.steps.find((s) => s.id === 'upload')!.notes.some((n) => n.includes('premium chose b7, not published')));
    assert.equal(report.objects[SCENARIO.sseC], 'unreadable (SSE-C)');
    assert.ok(Object.values(report.deadLetters).length >= 4);
    assert.ok(
      Object.values(report.deadLetters).every((n) => n === 0),
      JSON.stringify(report.deadLetters),
    );
    // S3's s3:TestEvent and every upload event were handled without a failed batch item.
    assert.ok(report.routerInvocations.length > 0);
    assert.ok(
      report.routerInvocations.every((i) => i.failures === 0 && !i.error),
      JSON.stringify(report.routerInvocations),
    );
  });

  it('a deleted object answers 404, because the router may list the bucket (else 403 and retries into the DLQ)', () => {
    const router = report.principals.find((p) => /IngestRouter/.test(p.runs))!;
    const get = router.calls.find((c) => c.command === 'GetObject' && c.input.Key === SCENARIO.deleted)!;
    assert.equal(get.status, 404);
    // (The router also lists the weights bucket: a model's manifest not published yet is a 404 too.)
    const list = router.verdicts.find((v) => v.action === 's3:ListBucket' && v.resource.startsWith('arn:aws:s3:::rh-bucket'))!;
    assert.equal(list.result, 'Allowed');
    assert.deepEqual(list.context, { 's3:prefix': SCENARIO.deleted });
  });

  it("the backfill state machine: a start with no input uses the stack's bucket, lists it, and the legacy image is tagged", () => {
    assert.match(String(report.backfill.input.bucket), /^rh-bucket/);
    assert.ok(report.backfill.batches >= 1);
    const legacy = report.objects[SCENARIO.legacy] as Record<string, string>;
    assert.equal(legacy['effitag-status'], 'tagged');
    const listed = report.backfill.results.reduce((n: number, r) => n + (r as { listed: number }).listed, 0);
    // Run at publishing time: the legacy image and the three first uploads were in the bucket.
    assert.equal(listed, 1 + report.firstUploads.length);
  });

  it("the workers fill the stack's tag index: every tagged object, nothing failed or deleted", () => {
    assert.deepEqual(
      report.indexed,
      [SCENARIO.catalog, SCENARIO.heic, SCENARIO.legacy, SCENARIO.photo, ...report.firstUploads.map((u) => u.key)].sort(),
    );
  });

  it('`effitag --stack EffiTag search` lists the same, the stack named once (its index table from its CloudFormation outputs)', () => {
    assert.ok(report.indexed.length > 0);
    assert.deepEqual(report.searchedWithStack, report.indexed);
  });

  it('IAM: every call every principal made is allowed by its policies in the template', () => {
    assert.deepEqual(
      report.denied.map((v) => `${v.role} ${v.action} ${v.resource} ${v.result}`),
      [],
    );
    for (const p of report.principals) assert.ok(p.verdicts.length > 0, `${p.runs} made no calls`);
    const sm = report.principals.find((p) => p.runs.startsWith('state machine'))!;
    assert.deepEqual(
      sm.verdicts.map((v) => v.action),
      ['s3:ListBucket'],
    );
  });

  it('IAM fails, naming action, resource and role, when a role lacks a permission a code path uses', async () => {
    const router = report.principals.find((p) => /IngestRouter/.test(p.runs))!;
    // The same template without the router's s3:ListBucket statement.
    const template = structuredClone(report.assembly.template);
    for (const r of Object.values(template.Resources)) {
      if (r.Type !== 'AWS::IAM::Policy') continue;
      r.Properties!.PolicyDocument.Statement = r.Properties!.PolicyDocument.Statement.filter(
        (s: { Sid?: string }) => s.Sid !== 'SeeMissingObjects',
      );
    }
    const verdicts = await evaluateCalls(
      { ...report.assembly, template },
      report.resolver,
      router.role,
      router.calls,
      report.queueArnOfUrl,
      report.tableArnOf,
    );
    const denied = verdicts.filter((v) => v.result !== 'Allowed');
    assert.equal(denied.length, 1, JSON.stringify(denied));
    assert.equal(denied[0].action, 's3:ListBucket');
    assert.match(denied[0].resource, /^arn:aws:s3:::rh-bucket/);
    assert.equal(denied[0].role, router.role);
    assert.equal(denied[0].result, 'ImplicitlyDenied');
  });

  it('a bundle fails its cold start, naming the module, when its layers lack a module it needs', async () => {
    const assembly = readAssembly(report.assembly.outdir);
    const world = await startWorld(assembly);
    try {
      const workerId = report.functions.map((f) => f.logicalId).find((id) => id.startsWith('CpueconomyWorker'))!;
      await assert.rejects(
        startLambda(assembly, world, workerId, { layerDirs: [] }),
        (err: Error) => err instanceof ColdStartError && /Cannot find module '(sharp|onnxruntime-node)'/.test(err.message),
      );
      // With its layer it starts, and without its configuration it says which variable is missing.
      const fn = await startLambda(assembly, world, workerId, { env: { EFFITAG_TIERS: '' } });
      try {
        await assert.rejects(fn.invoke({ Records: [] }), /environment variable EFFITAG_TIERS is not set/);
      } finally {
        await fn.stop();
      }
    } finally {
      await world.stop();
    }
  });
});

describe('deploy rehearsal: a GPU task killed mid-batch (SIGKILL)', () => {
  it('its messages return once its lease lapses and a new task tags each object exactly once', async () => {
    assert.ok(defaults, 'the defaults rehearsal ran first (its synthesized assembly)');
    const assembly = readAssembly(defaults.assembly.outdir);
    const world = await startWorld(assembly);
    const containers: Container[] = [];
    try {
      const [[bucketId]] = assembly.ofType('Custom::S3BucketNotifications').map(([, r]) => [r.Properties!.BucketName.Ref as string]);
      const bucket = world.bucketName(bucketId);
      const [[taskDefinition, def]] = assembly.ofType('AWS::ECS::TaskDefinition').filter(([id]) => taskTier(assembly, id) === 'standard');
      const env = Object.fromEntries(
        (def.Properties!.ContainerDefinitions[0].Environment as { Name: string; Value: unknown }[]).map((e) => [
          e.Name,
          world.resolver.resolve(e.Value),
        ]),
      );
      await publishWeights(world.s3, `${await weightsCatalog(['b0'])}/b0`, env.EFFITAG_WEIGHTS);
      const queueUrls = JSON.parse(env.EFFITAG_QUEUE_URLS) as Record<string, string>;
      const queue = [...world.queues.values()].find((q) => q.url === queueUrls[env.EFFITAG_TIER])!;
      // 40 uploads routed to the GPU tier (the router's tasks, sent here directly).
      const keys = Array.from({ length: 40 }, (_, i) => `catalog/item ${i}.jpg`);
      for (const [i, key] of keys.entries()) {
        const body = await gradientImage(224, 224, 'jpeg', 300 + i);
        const out = await world.s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: 'image/jpeg' }));
        const task: Task = {
          v: 1,
          bucket,
          key,
          eTag: out.ETag!.replace(/"/g, ''),
          size: body.length,
          tier: env.EFFITAG_TIER,
          variant: 'b0',
          source: 'upload',
          enqueuedAt: new Date().toISOString(),
        };
        await queue.send([taskMessage(task)]);
      }
      // A few HEADs at a time (metadataOfAll): 40 at once could drain the SDK's retry quota on a busy machine.
      const statuses = async () => (await metadataOfAll(world.s3, bucket, keys)).map((m) => m?.['effitag-status']);
      const lease = { EFFITAG_LEASE_SECONDS: '3' };
      const first = await startGpuContainer(assembly, world, taskDefinition, lease);
      containers.push(first);
      // Killed right after its first write-back (read from its audit log as it writes it: complete
      // lines only), so that it dies mid-work however fast this machine is.
      const firstWriteBack = () => {
        const text = existsSync(first.auditLog) ? readFileSync(first.auditLog, 'utf8') : '';
        return text
          .slice(0, text.lastIndexOf('\n') + 1)
          .split('\n')
          .filter(Boolean)
          .some((l) => /"command":"CopyObject"/.test(l) && /"status":200/.test(l));
      };
      await waitFor('the first write-back', async () => firstWriteBack() || undefined, 60_000);
      await first.kill();
      const killedAt = Date.now();
      const taggedByFirst = (await statuses()).filter(Boolean).length;
      assert.ok(taggedByFirst < keys.length, 'killed mid-work');

      const second = await startGpuContainer(assembly, world, taskDefinition, lease);
      containers.push(second);
      await waitFor(
        'every object tagged by the new task',
        async () => (await statuses()).every((s) => s === 'tagged') || undefined,
        90_000,
      );
      assert.equal(await second.stop(), 0);
      const writesBySecond = readAudit(second.auditLog).filter((c) => c.command === 'CopyObject' && c.status === 200);
      for (const key of keys) {
        const n = writesBySecond.filter((c) => c.input.Key === key).length;
        const at = Date.parse((await world.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).Metadata!['effitag-at']);
        // Written by the killed task (then skipped by its marker) or by the new one: once either way.
        assert.ok(
          n === 0 ? at < killedAt : n === 1 && at >= killedAt,
          `${key}: ${n} write(s) by the new task, tagged at ${new Date(at).toISOString()}`,
        );
      }
      assert.ok(writesBySecond.length >= keys.length - taggedByFirst);
      const dlq = [...world.queues.values()].find(
        (q) => q.logicalId === Object.keys(assembly.template.Resources).find((id) => id.startsWith(`Tier${env.EFFITAG_TIER}Dlq`)),
      )!;
      assert.equal((await dlq.receive({ max: 10, waitSeconds: 0 })).length, 0);
      process.stderr.write(
        `# GPU task SIGKILL: ${taggedByFirst}/${keys.length} tagged before the kill; the rest by the new task, ${writesBySecond.length} write-backs, none twice\n`,
      );
    } finally {
      for (const c of containers) await c.kill().catch(() => {});
      await world.stop();
    }
  });
});

for (const tiersFile of SHIPPED_TIERS.slice(1)) {
  describe(`deploy rehearsal: ${tiersFile}, deployed as the README says`, () => {
    it('settles with no weights, its tiers wait with a logged reason, and those whose weights are published tag their first upload', async () => {
      // The examples run in the EventBridge mode (the defaults' run covers S3 notifications): the
      // bucket sends its events to EventBridge, whose rule feeds the intake queue.
      const report = await runRehearsal({ tiersFile, events: 'eventbridge' });
      const [[, notifications]] = report.assembly.ofType('Custom::S3BucketNotifications');
      assert.deepEqual(
        notifications.Properties!.NotificationConfiguration,
        { EventBridgeConfiguration: {} },
        "the bucket's EventBridge switch, no notification rules",
      );
      assert.equal(report.assembly.ofType('AWS::Events::Rule').length, 1);
      assertDeployedAsDocumented(report);
      const { config } = loadTiers(join(REPO_ROOT, tiersFile));
      const gpuTiers = Object.entries(config.tiers).filter(([, t]) => t.kind === 'ecs-gpu');
      assert.deepEqual(report.tasks.map((t) => t.tier).sort(), gpuTiers.map(([name]) => name).sort());
      process.stderr.write(`# ${report.tiersFile}: ${report.steps.map((s) => `${s.id} ${s.seconds.toFixed(0)} s`).join(', ')}\n`);
    });
  });
}
