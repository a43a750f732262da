import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A local Secrets Manager endpoint: the JSON 1.1 protocol the AWS SDK speaks (POST /, header
 * `X-Amz-Target: secretsmanager.<Operation>`), GetSecretValue only, for the secrets it is given.
 * The functions reach it through `AWS_ENDPOINT_URL_SECRETS_MANAGER`, which the SDK honours, with
 * dummy credentials (the signature is not checked: there is no IAM here).
 */

export interface LocalSecret {
  arn: string;
  name: string;
  value: string;
}

export interface SecretsServer {
  url: string;
  /** GetSecretValue calls answered, per secret ARN (an unknown id counts under that id). */
  reads: Map<string, number>;
  /** Serves one more secret (tests give a function other credentials this way). */
  add(secret: LocalSecret): void;
  close(): Promise<void>;
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/x-amz-json-1.1',
    'Content-Length': Buffer.byteLength(text),
    'x-amzn-RequestId': randomUUID(),
  });
  res.end(text);
}

function error(res: ServerResponse, status: number, type: string, message: string): void {
  reply(res, status, { __type: type, message, Message: message });
}

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function startSecretsServer(initial: LocalSecret[]): Promise<SecretsServer> {
  const secrets = [...initial];
  const created = Date.now() / 1000;
  const reads = new Map<string, number>();
  const find = (id: string) => secrets.find((s) => s.arn === id || s.name === id);
  const server = createServer((req, res) => {
    void (async () => {
      const target = String(req.headers['x-amz-target'] ?? '');
      const text = await body(req);
      if (req.method !== 'POST' || !target.startsWith('secretsmanager.')) {
        return error(
          res,
          400,
          'UnknownOperationException',
          `not a Secrets Manager request: ${req.method} ${target}`,
        );
      }
      const operation = target.slice('secretsmanager.'.length);
      if (operation !== 'GetSecretValue') {
        return error(
          res,
          400,
          'UnknownOperationException',
          `the twin's Secrets Manager answers GetSecretValue only, not ${operation}`,
        );
      }
      let input: { SecretId?: unknown };
      try {
        input = JSON.parse(text) as { SecretId?: unknown };
      } catch {
        return error(res, 400, 'SerializationException', 'the body is not JSON');
      }
      const id = String(input.SecretId ?? '');
      reads.set(id, (reads.get(id) ?? 0) + 1);
      const secret = find(id);
      if (!secret) {
        return error(
          res,
          400,
          'ResourceNotFoundException',
          "Secrets Manager can't find the specified secret.",
        );
      }
      reply(res, 200, {
        ARN: secret.arn,
        Name: secret.name,
        SecretString: secret.value,
        VersionId: 'twin-00000000-0000-0000-0000-000000000001',
        VersionStages: ['AWSCURRENT'],
        CreatedDate: created,
      });
    })().catch((e: unknown) => error(res, 500, 'InternalServiceError', (e as Error).message));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    reads,
    add: (secret) => {
      secrets.push(secret);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
