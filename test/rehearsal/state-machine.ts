/**
 * The backfill state machine as Step Functions runs it, for the parts the rehearsal needs: the
 * `Defaults` Pass state's merge of the execution input over the template's defaults, the Distributed
 * Map's S3 ItemReader (ListObjectsV2 with the state machine's own role, items in the reader's exact
 * shape: quoted `Etag`, `LastModified` in epoch seconds), its ItemBatcher, and the item processor's
 * Lambda invocation with the batch input.
 */
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { auditCalls } from '../../pipeline/aws/audit.ts';
import { s3Client } from '../../pipeline/aws/clients.ts';
import type { LambdaFunction } from './lambda.ts';
import type { Assembly } from './template.ts';
import { CREDENTIALS, type World } from './world.ts';

export interface StateMachineRun {
  input: Record<string, unknown>;
  batches: number;
  results: unknown[];
}

/** `$.a.b` against a JSON object. */
const path = (doc: Record<string, any>, p: string) =>
  p
    .replace(/^\$\.?/, '')
    .split('.')
    .filter(Boolean)
    .reduce<any>((o, k) => o?.[k], doc);

export function stateMachineOf(assembly: Assembly, world: World): { id: string; roleId: string; definition: Record<string, any> } {
  const [[id, sm]] = assembly.ofType('AWS::StepFunctions::StateMachine');
  const definition = JSON.parse(world.resolver.resolve(sm.Properties!.DefinitionString) as string);
  return { id, roleId: sm.Properties!.RoleArn['Fn::GetAtt'][0] as string, definition };
}

export async function runBackfillStateMachine(
  assembly: Assembly,
  world: World,
  processor: LambdaFunction,
  input: Record<string, unknown>,
  auditLog: string,
): Promise<StateMachineRun> {
  const { definition } = stateMachineOf(assembly, world);
  // Defaults: States.JsonMerge(States.StringToJson('<defaults>'), $, false) — a shallow merge.
  const defaults = definition.States[definition.StartAt];
  const merge = /States\.StringToJson\('(.*)'\), \$, false\)$/.exec(defaults.Parameters['input.$']);
  if (!merge) throw new Error(`unexpected Defaults state: ${JSON.stringify(defaults)}`);
  const merged = { ...JSON.parse(merge[1]), ...input };
  const map = definition.States[defaults.Next];
  const reader = map.ItemReader;
  if (reader.Resource !== 'arn:aws:states:::s3:listObjectsV2') throw new Error(`unexpected ItemReader ${reader.Resource}`);
  const bucket = reader.Parameters['Bucket.$'] ? path(merged, reader.Parameters['Bucket.$']) : reader.Parameters.Bucket;
  const prefix = reader.Parameters['Prefix.$'] ? path(merged, reader.Parameters['Prefix.$']) : reader.Parameters.Prefix;
  const s3 = auditCalls(s3Client({ s3Endpoint: world.s3Endpoint, credentials: CREDENTIALS }), 's3', auditLog);
  const items: Record<string, unknown>[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix || undefined, ContinuationToken: token }));
    for (const o of page.Contents ?? []) {
      items.push({
        Etag: o.ETag,
        Key: o.Key,
        LastModified: Math.floor(o.LastModified!.getTime() / 1000),
        Size: o.Size,
        StorageClass: o.StorageClass ?? 'STANDARD',
      });
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  s3.destroy();
  const batchInput = Object.fromEntries(
    Object.entries(map.ItemBatcher.BatchInput as Record<string, string>).map(([k, v]) =>
      k.endsWith('.$') ? [k.slice(0, -2), path(merged, v)] : [k, v],
    ),
  );
  const size = map.ItemBatcher.MaxItemsPerBatch as number;
  const results: unknown[] = [];
  for (let i = 0; i < items.length; i += size) {
    results.push(await processor.invoke({ Items: items.slice(i, i + size), BatchInput: batchInput }));
  }
  return { input: merged, batches: results.length, results };
}
