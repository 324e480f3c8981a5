import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger };

/**
 * The one root logger. Every capture's lines carry namespace, name, podUID and node via
 * child loggers; secrets never reach it because we log objects' identities, not objects.
 */
export function createLogger(component: string, bindings: Record<string, unknown> = {}, destination?: DestinationStream): Logger {
  const options = {
    level: process.env.LOG_LEVEL ?? 'info',
    base: { component, ...bindings },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: ['token', 'password', '*.token', 'headers.authorization'],
  };
  // stdout unless given: `npm start` keeps its terminal for the ready line and logs to a file
  return destination ? pino(options, destination) : pino(options);
}
