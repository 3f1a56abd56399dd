/**
 * Stack configuration from cdk.json context (override any key with `-c key=value`):
 *
 * | key | meaning | default |
 * |---|---|---|
 * | effitag:tiersFile | tiers file, validated at synth (an invalid file fails synthesis) | tiers/defaults.json |
 * | effitag:bucketName | bucket to tag; absent → the stack creates one | (created) |
 * | effitag:bucketKmsKeyArn | the bucket's SSE-KMS key; grants kms:Decrypt/GenerateDataKey only then | (none) |
 * | effitag:prefixes | comma-separated key prefixes to watch ('' = the whole bucket) | '' |
 * | effitag:weightsBucket / effitag:weightsPrefix | where `effitag weights publish` put the weights | (a created bucket), weights/ |
 * | effitag:vpcId | an existing VPC for the GPU instances; absent → a minimal one (public subnets, no NAT) | (created) |
 * | effitag:alarmEmail | e-mail subscribed to the alarms | (none) |
 * | effitag:index | keep the tag index (DynamoDB) for `effitag search` and the gallery; `false` saves its cost | true |
 */
import type { Node } from 'constructs';
import { readTiersJson, resolveTiersPath } from '../tiers/load.ts';
import { parseTiers, type TiersFile } from '../tiers/schema.ts';

export interface EffiTagConfig {
  tiersFile: string;
  tiers: TiersFile;
  bucketName?: string;
  bucketKmsKeyArn?: string;
  prefixes: string[];
  weightsBucket?: string;
  weightsPrefix: string;
  vpcId?: string;
  alarmEmail?: string;
  /** Keep the tag index (a DynamoDB table the workers write). */
  index: boolean;
}

const str = (node: Node, key: string): string | undefined => {
  const v = node.tryGetContext(key);
  return v === undefined || v === null || v === '' ? undefined : String(v);
};

export function configFromContext(node: Node, cwd = process.cwd()): EffiTagConfig {
  const tiersFile = resolveTiersPath(str(node, 'effitag:tiersFile') ?? process.env.EFFITAG_TIERS_FILE, {}, cwd);
  const tiers = parseTiers(readTiersJson(tiersFile), tiersFile); // throws with every path-named error
  const prefixes = (str(node, 'effitag:prefixes') ?? '').split(',').map((p) => p.trim());
  const unique = [...new Set(prefixes)];
  for (const a of unique)
    for (const b of unique) {
      // S3 rejects notification rules whose prefixes overlap for the same event type.
      if (a !== b && b.startsWith(a)) throw new Error(`effitag:prefixes: "${b}" overlaps "${a}"; S3 notifications cannot overlap`);
    }
  const index = str(node, 'effitag:index') !== 'false';
  const indexOnly = Object.entries(tiers.tiers).filter(([, t]) => t.writeBack === 'index');
  if (!index && indexOnly.length)
    throw new Error(
      `effitag:index=false, but tier ${indexOnly.map(([n]) => n).join(', ')} writes back to the index only (writeBack: index)`,
    );
  return {
    tiersFile,
    index,
    tiers,
    bucketName: str(node, 'effitag:bucketName'),
    bucketKmsKeyArn: str(node, 'effitag:bucketKmsKeyArn'),
    prefixes: unique,
    weightsBucket: str(node, 'effitag:weightsBucket'),
    weightsPrefix: (str(node, 'effitag:weightsPrefix') ?? 'weights/').replace(/^\/+/, ''),
    vpcId: str(node, 'effitag:vpcId'),
    alarmEmail: str(node, 'effitag:alarmEmail'),
  };
}
