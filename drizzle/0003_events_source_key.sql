UPDATE "events" SET "source_id" = 'default' WHERE "source_id" IS NULL;--> statement-breakpoint
ALTER TABLE "events" ALTER COLUMN "source_id" SET NOT NULL;--> statement-breakpoint
ALTER TABLE "events" DROP CONSTRAINT "events_pkey";--> statement-breakpoint
ALTER TABLE "events" ADD CONSTRAINT "events_source_id_id_pk" PRIMARY KEY("source_id","id");--> statement-breakpoint
CREATE TABLE "source_datasets" (
	"source_id" text PRIMARY KEY NOT NULL,
	"upstream" text NOT NULL,
	"description" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
