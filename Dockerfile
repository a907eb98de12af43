FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY streams streams
COPY topology topology
COPY outage_sms outage_sms
RUN pip install --no-cache-dir .
ENV OUTAGE_SMS_DATA_DIR=/data
VOLUME /data
ENTRYPOINT ["outage-sms"]
CMD ["worker"]
