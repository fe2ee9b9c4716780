//! Reading values out of Prometheus text exposition.

/// The sum of every sample of metric `name` (all label sets), or `None` when
/// the text has no sample of that name.
pub fn sample_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let series_end = line.find(['{', ' ']).unwrap_or(line.len());
        if &line[..series_end] != name {
            continue;
        }
        // The value follows the label set (which may contain spaces in values).
        let after_labels = match line[series_end..].starts_with('{') {
            true => line[series_end..]
                .rfind('}')
                .map(|i| &line[series_end + i + 1..]),
            false => Some(&line[series_end..]),
        };
        let value = after_labels
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(value) = value {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// Every metric name that has a sample, for error messages.
pub fn sample_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l[..l.find(['{', ' ']).unwrap_or(l.len())].to_string())
        .collect();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP a_open open things\n# TYPE a_open gauge\na_open 3\n\
        b_total{code=\"4401\"} 2\nb_total{code=\"1000\",x=\"a b\"} 5\nb_total_bucket{le=\"1\"} 9\n";

    #[test]
    fn sums_samples_across_label_sets_and_ignores_longer_names() {
        assert_eq!(sample_sum(TEXT, "a_open"), Some(3.0));
        assert_eq!(sample_sum(TEXT, "b_total"), Some(7.0));
        assert_eq!(sample_sum(TEXT, "missing"), None);
        assert_eq!(sample_names(TEXT), ["a_open", "b_total", "b_total_bucket"]);
    }
}
