# One image for the api, worker and beat services (see docker-compose.yml).
FROM python:3.11-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends libsndfile1 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY classifier classifier
COPY db db
COPY training training
COPY reports reports
COPY worker worker
COPY api api
COPY voicegender voicegender
COPY migrations migrations
COPY alembic.ini ./
COPY models models
COPY examples examples
RUN pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir -e .
ENV VOICEGENDER_DATA_DIR=/data
VOLUME /data
