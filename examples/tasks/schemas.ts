// TypeBox schemas: one source for the route bodies, the event payloads checked by `broadcast`,
// and (through `Static`) the TypeScript types of both.
import { Type, type Static } from 'typebox'

export const StatusSchema = Type.Union([Type.Literal('todo'), Type.Literal('doing'), Type.Literal('done')])
export type Status = Static<typeof StatusSchema>

const Title = Type.String({ minLength: 1, maxLength: 200, pattern: '\\S' })

export const TaskSchema = Type.Object({
  id: Type.String(),
  title: Title,
  status: StatusSchema,
  boardId: Type.String(),
  /** Milliseconds since the Unix epoch; clients keep the newest copy of a task. */
  updatedAt: Type.Integer()
}, { additionalProperties: false })
export type Task = Static<typeof TaskSchema>

// Route bodies
export const NewTaskSchema = Type.Object({
  title: Title,
  status: Type.Optional(StatusSchema)
}, { additionalProperties: false })
export type NewTask = Static<typeof NewTaskSchema>

export const TaskChangeSchema = Type.Object({
  title: Type.Optional(Title),
  status: Type.Optional(StatusSchema)
}, { additionalProperties: false, minProperties: 1 })
export type TaskChange = Static<typeof TaskChangeSchema>

export const BoardParamsSchema = Type.Object({ boardId: Type.String({ pattern: '^[a-z0-9-]{1,64}$' }) })
export type BoardParams = Static<typeof BoardParamsSchema>

export const TaskParamsSchema = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) })
export type TaskParams = Static<typeof TaskParamsSchema>

// Event payloads, sent to `board:<boardId>`
export const TaskCreated = Type.Object({ task: TaskSchema }, { additionalProperties: false })
export const TaskUpdated = Type.Object({ task: TaskSchema }, { additionalProperties: false })
export const TaskMoved = Type.Object({ task: TaskSchema, from: StatusSchema }, { additionalProperties: false })
export const TaskDeleted = Type.Object({ id: Type.String(), boardId: Type.String() }, { additionalProperties: false })

/** The plugin's `events` option: every payload is checked before it is stored or sent. */
export const events = {
  'task:created': TaskCreated,
  'task:updated': TaskUpdated,
  'task:moved': TaskMoved,
  'task:deleted': TaskDeleted
}

// Typed events: `app.broadcast('board:demo', 'task:moved', …)` is checked at compile time.
declare module 'fastify-realtime' {
  interface RealtimeEvents {
    'task:created': Static<typeof TaskCreated>
    'task:updated': Static<typeof TaskUpdated>
    'task:moved': Static<typeof TaskMoved>
    'task:deleted': Static<typeof TaskDeleted>
  }
}
