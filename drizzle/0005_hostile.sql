CREATE TABLE "event_conflicts" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"source_id" text NOT NULL,
	"event_id" uuid NOT NULL,
	"fields" text NOT NULL,
	"received" text NOT NULL,
	"received_hash" text NOT NULL,
	"page_cursor" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "event_conflicts_source_event_hash_key" UNIQUE("source_id","event_id","received_hash")
);
--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "empty_pages_in_a_row" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "checkpoints" ADD COLUMN "conflicts" bigint DEFAULT 0 NOT NULL;
