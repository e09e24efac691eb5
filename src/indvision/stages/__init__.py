"""Pipeline stages. Each module holds a frozen ``Config`` dataclass and one ``run(config, run)``
function that reads earlier stages' files from the run folder and writes its own; the order and
names live in :data:`indvision.config.STAGES`."""
