# The two commands of the README. Both create/update .venv first.
.PHONY: quick test

quick:  ## set up, then run the quick synthetic benchmark; it writes runs/quick/report.html
	bash scripts/bootstrap.sh
	.venv/bin/mmal benchmark run --suite quick --out runs/quick

test:  ## set up (with test dependencies), then run the whole test suite
	bash scripts/bootstrap.sh --test
	bash scripts/labelstudio_env.sh
	.venv/bin/python -m pytest
