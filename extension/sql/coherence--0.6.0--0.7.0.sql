-- coherence 0.6.0 -> 0.7.0 (see CHANGELOG.md). Run by ALTER EXTENSION coherence UPDATE TO '0.7.0'.
-- Lead evidence in root-cause ranking and in the causal graph (lagged correlation of the
-- members' anomaly onsets in the host's history; computed by coherence.correlate, whose
-- signature is unchanged): the columns that carry it say so. No data changes.
\echo Use "ALTER EXTENSION coherence UPDATE TO '0.7.0'" to load this file. \quit

COMMENT ON COLUMN coherence.incidents.ranking IS 'Member metrics, most likely root cause first: the metrics whose anomalies formed it [{metric, anomaly, kind, start, risk, score, evidence, peers: {moving, total} when the metric has peers, lead: {before, after} with lead evidence}], then the host''s other metrics that deviated during it [{metric, kind: involved, score, peak_at, value, baseline}] (see docs/incidents.md).';
COMMENT ON COLUMN coherence.incident_edges.strength IS 'risk(cause) · tolerance / (tolerance + lag), between two member metrics times their lead evidence (1 ± 0.5, at most 1 in all); 0.5 · risk for context anomalies.';
COMMENT ON FUNCTION coherence.correlate(jsonb, jsonb, interval, integer, interval, jsonb) IS
    'Temporal correlator: signals (errors and anomalies, jsonb array) to incidents with causal graph, ranked hypotheses and narrative (jsonb); signals within tolerance are linked, and incidents of one host at most join_gap apart (default 0: none) are one. With fleet (how many hosts report each metric, e.g. {"cpu": 12}), members carry peer evidence: a deviation most peers show at the same time ranks lower and is called fleet-wide load. Lead evidence (how often a member''s anomalies began shortly before or after the other members'' earlier in the signals) weighs the ranking and the graph''s edges. Used by run_detection (join_gap => close_after, fleet from coherence.series_state); see docs/incidents.md. E.g. SELECT jsonb_array_length(coherence.correlate(''[]''::jsonb));';
