/**
 * The rehearsal's CloudFormation, as far as `effitag --stack NAME` asks it: DescribeStacks (the AWS
 * query protocol, form-encoded in, XML out) answering a deployed stack's outputs, so the CLI reads
 * them as it would from AWS (AWS_ENDPOINT_URL_CLOUDFORMATION points the SDK here). Any other action
 * is refused. Requests are not signature-checked: the stand-in holds no secrets, only outputs.
 */
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ACCOUNT, REGION, type Assembly, type Resolver } from './template.ts';

const xml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const NS = 'http://cloudformation.amazonaws.com/doc/2010-05-15/';

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** A template's Outputs with their values resolved against the rehearsal's physical resources. */
export function resolvedOutputs(assembly: Assembly, resolver: Resolver): Record<string, string> {
  const outputs = (assembly.template as { Outputs?: Record<string, { Value: unknown }> }).Outputs ?? {};
  return Object.fromEntries(Object.entries(outputs).map(([k, o]) => [k, String(resolver.resolve(o.Value))]));
}

export interface CloudFormationStandIn {
  endpoint: string;
  /** What DescribeStacks was asked, in order (stack names). */
  asked: string[];
  close(): Promise<void>;
}

/** DescribeStacks for `stacks` (name → outputs); an unknown name gets CloudFormation's ValidationError. */
export async function startCloudFormation(stacks: Record<string, Record<string, string>>): Promise<CloudFormationStandIn> {
  const asked: string[] = [];
  const server = createServer(async (req, res) => {
    const form = new URLSearchParams(await body(req));
    const action = form.get('Action');
    const name = form.get('StackName') ?? '';
    const requestId = `rehearsal-${Date.now()}`;
    const fail = (status: number, code: string, message: string) => {
      res.writeHead(status, { 'content-type': 'text/xml' });
      res.end(
        `<ErrorResponse xmlns="${NS}"><Error><Type>Sender</Type><Code>${code}</Code><Message>${xml(message)}</Message></Error><RequestId>${requestId}</RequestId></ErrorResponse>`,
      );
    };
    if (action !== 'DescribeStacks')
      return fail(400, 'InvalidAction', `the rehearsal's CloudFormation answers DescribeStacks only, not ${action}`);
    asked.push(name);
    const outputs = stacks[name];
    if (!outputs) return fail(400, 'ValidationError', `Stack with id ${name} does not exist`);
    const members = Object.entries(outputs)
      .map(([k, v]) => `<member><OutputKey>${xml(k)}</OutputKey><OutputValue>${xml(v)}</OutputValue></member>`)
      .join('');
    res.writeHead(200, { 'content-type': 'text/xml' });
    res.end(
      `<DescribeStacksResponse xmlns="${NS}"><DescribeStacksResult><Stacks><member>` +
        `<StackName>${xml(name)}</StackName><StackId>arn:aws:cloudformation:${REGION}:${ACCOUNT}:stack/${xml(name)}/rehearsal</StackId>` +
        `<CreationTime>2026-01-01T00:00:00.000Z</CreationTime><StackStatus>CREATE_COMPLETE</StackStatus>` +
        `<Outputs>${members}</Outputs></member></Stacks></DescribeStacksResult>` +
        `<ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata></DescribeStacksResponse>`,
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    asked,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
